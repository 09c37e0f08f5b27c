package images

import (
	"debug/elf"
	"fmt"
)

// checkRunnable refuses an executable the appliance could not run: one linked against a dynamic
// loader the image does not carry. The kernel reports that only as "Failed to execute /init
// (error -2)" and panics, so the builder says it first.
func (f *Initramfs) checkRunnable(guest, host string) error {
	e, err := elf.Open(host)
	if err != nil {
		return nil // a script or another format: the kernel's binfmt decides
	}
	defer e.Close()
	for _, p := range e.Progs {
		if p.Type != elf.PT_INTERP {
			continue
		}
		buf := make([]byte, p.Filesz)
		if _, err := p.ReadAt(buf, 0); err != nil {
			return nil
		}
		interp := string(buf[:len(buf)-1])
		if !f.Has(interp) {
			return fmt.Errorf("%s (%s) is dynamically linked (needs %s, which the image lacks): build it static (Go: CGO_ENABLED=0)", guest, host, interp)
		}
	}
	return nil
}
