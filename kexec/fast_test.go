package kexec

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// debianKernels are the kernels make kernel fetches (qemu-tests/fetch-kernel.sh): Debian's
// generic build has an XZ payload, its cloud build an LZ4 one.
func debianKernels(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	for flavour, want := range map[string]string{"amd64": "xz", "cloud-amd64": "lz4"} {
		m, _ := filepath.Glob("../out/kernel/" + flavour + "/boot/vmlinuz-*")
		if len(m) == 0 {
			if os.Getenv("BATON_REQUIRE_KERNEL") != "" {
				t.Fatalf("no %s kernel in out/kernel (make kernel fetches it)", flavour)
			}
			t.Skipf("no %s kernel in out/kernel (make kernel fetches it)", flavour)
		}
		out[want] = m[0]
	}
	return out
}

// The payload of each of Debian's kernels decompresses, streamed, to the layout the kernel's
// own decompressor makes; every 64-bit relocation names a word that holds an address in the
// kernel's map, and moves by exactly the offset.
func TestExtractAndRelocateDebianKernels(t *testing.T) {
	for compression, path := range debianKernels(t) {
		t.Run(compression, func(t *testing.T) {
			kb, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			h, err := parseBzImage(kb)
			if err != nil {
				t.Fatal(err)
			}
			if h.compression != compression || h.prefAddress != 0x1000000 || h.kernelAlign != 0x200000 {
				t.Fatalf("header: compression %s, pref %#x, align %#x", h.compression, h.prefAddress, h.kernelAlign)
			}
			k, err := h.extract()
			if err != nil {
				t.Fatal(err)
			}
			if k.memSize < h.initSize || uint64(len(k.mem)) > k.memSize || len(k.mem) < 8<<20 {
				t.Fatalf("image %d bytes, memsize %d, init_size %d", len(k.mem), k.memSize, h.initSize)
			}
			// startup_64 begins with the 64-bit code the kernel's head_64.S has (cld; then a
			// jump or lea): it is not zeros.
			if bytes.Equal(k.mem[k.entry:k.entry+16], make([]byte, 16)) {
				t.Fatalf("entry at %#x is all zeros", k.entry)
			}
			// .bss and .brk are found, zero in the payload, and left out of what is copied;
			// no relocation points into them (checked below, through relocate's bounds).
			if len(k.cleared) != 2 {
				t.Fatalf("cleared sections: %+v, want .bss and .brk", k.cleared)
			}
			var copied, cleared uint64
			for _, c := range k.cleared {
				if c.off%4096 != 0 || c.end%4096 != 0 || c.end > uint64(len(k.mem)) || k.entry >= c.off && k.entry < c.end {
					t.Fatalf("cleared span %#x–%#x of a %#x-byte image (entry %#x)", c.off, c.end, len(k.mem), k.entry)
				}
				if !bytes.Equal(k.mem[c.off:c.end], make([]byte, c.end-c.off)) {
					t.Fatalf("cleared span %#x–%#x holds data", c.off, c.end)
				}
				cleared += c.end - c.off
			}
			for _, c := range k.copied() {
				copied += c.end - c.off
			}
			if copied+cleared != uint64(len(k.mem)) || cleared < 4<<20 {
				t.Fatalf("copied %d + cleared %d bytes of %d", copied, cleared, len(k.mem))
			}
			before := append([]byte(nil), k.mem...)
			const delta = 0x2600000
			if err := k.relocate(h.prefAddress, delta); err != nil {
				t.Fatal(err)
			}
			n64, moved, inMap := 0, 0, 0
			i := 0
			entry := func() uint64 {
				v := uint64(int64(int32(binary.LittleEndian.Uint32(k.relocs[len(k.relocs)-4*(i+1):]))))
				i++
				return v
			}
			for entry() != 0 { // 32-bit
				moved++
			}
			for entry() != 0 { // inverse 32-bit
				moved++
			}
			for v := entry(); v != 0; v = entry() {
				off := v - startKernelMap - h.prefAddress
				old := binary.LittleEndian.Uint64(before[off:])
				now := binary.LittleEndian.Uint64(k.mem[off:])
				// Most hold kernel addresses; the early page tables hold physical ones
				// computed from them (sym - __START_KERNEL_map), relocated all the same.
				kernelAddr := old >= startKernelMap && old < startKernelMap+kernelImageSize
				if (!kernelAddr && old >= kernelImageSize) || now != old+delta {
					t.Fatalf("64-bit relocation at %#x: %#x → %#x", v, old, now)
				}
				if kernelAddr {
					inMap++
				}
				n64++
			}
			if n64 < 1000 || moved < 1000 || inMap < n64*9/10 {
				t.Fatalf("%d 64-bit relocations (%d to kernel addresses) and %d 32-bit ones", n64, inMap, moved)
			}
			for _, c := range k.cleared {
				for j := 0; j < i; j++ { // the three lists entry read, their zeros included
					v := uint64(int64(int32(binary.LittleEndian.Uint32(k.relocs[len(k.relocs)-4*(j+1):]))))
					if off := v - startKernelMap - h.prefAddress; v != 0 && off >= c.off && off < c.end {
						t.Fatalf("relocation at %#x is in cleared span %#x–%#x", v, c.off, c.end)
					}
				}
			}
			t.Logf("%s: %d MB laid out (memsize %d MB, %d MB copied at the jump), %d 64-bit and %d 32-bit relocations", compression,
				len(k.mem)>>20, k.memSize>>20, copied>>20, n64, moved)
		})
	}
}

// A bzImage cut short, one whose payload has an unknown magic, and a file that is no bzImage
// are refused with the cause named, as ImageError: no method is tried after them.
func TestBadImagesAreRefusedWithTheCause(t *testing.T) {
	path := debianKernels(t)["xz"]
	kb, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	unknown := append([]byte(nil), kb...)
	off := (int(kb[hdrSetupSects])+1)*512 + int(binary.LittleEndian.Uint32(kb[hdrPayloadOffset:]))
	copy(unknown[off:], []byte{0xde, 0xad, 0xbe, 0xef, 0, 0})
	// A payload whose trailer promises more than it decompresses to.
	long := append([]byte(nil), kb...)
	end := off + int(binary.LittleEndian.Uint32(kb[hdrPayloadLength:]))
	binary.LittleEndian.PutUint32(long[end-4:], binary.LittleEndian.Uint32(kb[end-4:])+4096)
	// A physical link address beyond the kernel's 1 GiB would wrap the relocations' bounds.
	farPref := append([]byte(nil), kb...)
	binary.LittleEndian.PutUint64(farPref[hdrPrefAddress:], 1<<63)
	for name, c := range map[string]struct {
		file []byte
		want string
	}{
		"pref-address": {farPref, "pref_address"},
		"truncated":    {kb[:len(kb)/2], "truncated"},
		"unknown":      {unknown, "unknown payload compression"},
		"not-kernel":   {bytes.Repeat([]byte("initramfs "), 200), "not a bzImage"},
		"short-trail":  {long, "truncated"},
	} {
		t.Run(name, func(t *testing.T) {
			img := Image{Kernel: write(name, c.file)}
			_, _, err := prepareFast(img)
			var bad *ImageError
			if !errors.As(err, &bad) || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), img.Kernel) {
				t.Fatalf("error %v, want an ImageError naming the file and %q", err, c.want)
			}
		})
	}
}

// Fast falls back to file when kexec_load is refused, and says why; a bad image is refused
// outright; when both are refused, both refusals are named.
func TestMethodFallback(t *testing.T) {
	defer func() { fastLoad, fileLoad = loadFast, Load }()
	img := Image{Kernel: "/boot/vmlinuz"}
	fileCalls := 0
	fileLoad = func(Image) error { fileCalls++; return nil }

	fastLoad = func(Image) (FastInfo, error) {
		return FastInfo{}, callError("kexec_load", unix.EPERM)
	}
	r, err := LoadWith(img, Fast)
	if err != nil || r.Method != File || !strings.Contains(r.Fallback, "operation not permitted") || fileCalls != 1 {
		t.Fatalf("EPERM from kexec_load: %+v, %v (file calls %d)", r, err, fileCalls)
	}
	if !strings.Contains(r.Note(), "fast refused") {
		t.Errorf("note %q does not say the fast method was refused", r.Note())
	}

	fastLoad = func(Image) (FastInfo, error) {
		return FastInfo{}, &ImageError{Path: img.Kernel, Err: errors.New("truncated: …")}
	}
	if _, err := LoadWith(img, Fast); err == nil || !strings.Contains(err.Error(), "not a kernel that can be booted") || fileCalls != 1 {
		t.Fatalf("bad image: %v (file calls %d), want a refusal and no file load", err, fileCalls)
	}

	fastLoad = func(Image) (FastInfo, error) { return FastInfo{}, callError("kexec_load", unix.EPERM) }
	fileLoad = func(Image) error { return callError("kexec_file_load(/boot/vmlinuz)", unix.EKEYREJECTED) }
	_, err = LoadWith(img, Fast)
	var both *BothRefused
	if !errors.As(err, &both) || !strings.Contains(err.Error(), "kexec_load") || !strings.Contains(err.Error(), "signature was rejected") {
		t.Fatalf("both refused: %v", err)
	}

	fastCalls := 0
	fastLoad = func(Image) (FastInfo, error) { fastCalls++; return FastInfo{}, nil }
	fileLoad = func(Image) error { return nil }
	if r, err := LoadWith(img, File); err != nil || r.Method != File || fastCalls != 0 {
		t.Fatalf("file asked for: %+v %v, fast calls %d", r, err, fastCalls)
	}
}

// The zero page carries the new kernel's setup header, the memory map, the command line and
// initrd addresses, the KASLR flag, and nothing of the running kernel's setup_data or EFI.
func TestZeroPage(t *testing.T) {
	path := debianKernels(t)["xz"]
	kb, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	h, err := parseBzImage(kb)
	if err != nil {
		t.Fatal(err)
	}
	running := make([]byte, 4096)
	running[0x1c0] = 0xaa                                   // efi_info
	binary.LittleEndian.PutUint64(running[0x250:], 0x1234)  // setup_data
	binary.LittleEndian.PutUint64(running[0x070:], 0xf5a40) // acpi_rsdp_addr
	bootParamsPath = filepath.Join(t.TempDir(), "data")
	defer func() { bootParamsPath = "/sys/kernel/boot_params/data" }()
	if err := os.WriteFile(bootParamsPath, running, 0o644); err != nil {
		t.Fatal(err)
	}
	e820 := []e820Entry{{0, 0x9fc00, 1}, {0x100000, 0x1ff00000, 1}, {0xfffc0000, 0x40000, 2}}
	efiSystabPath = filepath.Join(t.TempDir(), "systab")
	defer func() { efiSystabPath = "/sys/firmware/efi/systab" }()
	zp, err := zeroPage(h, e820, 0x123000, 0x1c000000, 0x800000, true)
	if err != nil {
		t.Fatal(err)
	}
	u32 := func(at int) uint32 { return binary.LittleEndian.Uint32(zp[at:]) }
	if string(zp[hdrMagic:hdrMagic+4]) != "HdrS" || u32(0x228) != 0x123000 || u32(0x218) != 0x1c000000 || u32(0x21c) != 0x800000 {
		t.Errorf("header, cmdline or initrd wrong")
	}
	if zp[0x1e8] != 3 || binary.LittleEndian.Uint64(zp[0x2d0+20+8:]) != 0x1ff00000 || u32(0x2d0+40+16) != 2 {
		t.Errorf("e820 table wrong")
	}
	if zp[hdrLoadflags]&0x02 == 0 || zp[hdrLoadflags]&0x01 == 0 {
		t.Errorf("loadflags %#x: want LOADED_HIGH and KASLR_FLAG", zp[hdrLoadflags])
	}
	if zp[0x1c0] != 0 || binary.LittleEndian.Uint64(zp[0x250:]) != 0 || binary.LittleEndian.Uint64(zp[0x070:]) != 0xf5a40 {
		t.Errorf("efi_info or setup_data inherited, or acpi_rsdp_addr lost")
	}
	if got := binary.LittleEndian.Uint32(zp[0x1e0:]); got != 0x1ff00000>>10 {
		t.Errorf("alt_mem_k %#x", got)
	}

	// After a UEFI boot the running zero page has no RSDP: the EFI system table's is used.
	binary.LittleEndian.PutUint64(running[0x070:], 0)
	if err := os.WriteFile(bootParamsPath, running, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(efiSystabPath, []byte("MPS=0x1f5e6000\nACPI20=0x1f77e014\nACPI=0x1f77e000\nSMBIOS=0x1f5e4000\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	zp, _ = zeroPage(h, e820, 0x123000, 0, 0, false)
	if got := binary.LittleEndian.Uint64(zp[0x070:]); got != 0x1f77e014 {
		t.Errorf("acpi_rsdp_addr %#x after a UEFI boot, want the systab's ACPI20", got)
	}
}

// The purgatory is the three instructions its comment shows.
func TestPurgatory(t *testing.T) {
	p := purgatory(0x11223344, 0x5566778899)
	want := []byte{0x48, 0xbe, 0x44, 0x33, 0x22, 0x11, 0, 0, 0, 0, 0x48, 0xb8, 0x99, 0x88, 0x77, 0x66, 0x55, 0, 0, 0, 0xff, 0xe0}
	if !bytes.Equal(p, want) {
		t.Fatalf("purgatory % x", p)
	}
}

// EPERM says which refusal it is when the running kernel tells: the sysctl, or lockdown.
func TestNotPermittedNamesTheCause(t *testing.T) {
	dir := t.TempDir()
	defer func(a string, b []string) { loadDisabledPath, lockdownPaths = a, b }(loadDisabledPath, lockdownPaths)
	loadDisabledPath = filepath.Join(dir, "kexec_load_disabled")
	lockdownPaths = []string{filepath.Join(dir, "lockdown"), filepath.Join(dir, "cmdline")}
	write := func(p, s string) {
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(loadDisabledPath, "0\n")
	write(lockdownPaths[1], "console=ttyS0 lockdown=integrity quiet\n")
	if err := callError("kexec_load", unix.EPERM); !strings.Contains(err.Error(), "locked down (integrity)") {
		t.Errorf("lockdown from the command line: %v", err)
	}
	write(lockdownPaths[0], "none integrity [confidentiality]\n")
	if err := callError("kexec_load", unix.EPERM); !strings.Contains(err.Error(), "locked down (confidentiality)") {
		t.Errorf("lockdown from securityfs: %v", err)
	}
	write(loadDisabledPath, "1\n")
	if err := callError("kexec_file_load", unix.EPERM); !strings.Contains(err.Error(), "kexec_load_disabled is set") {
		t.Errorf("sysctl: %v", err)
	}
	write(loadDisabledPath, "0\n")
	write(lockdownPaths[0], "[none] integrity confidentiality\n")
	if err := callError("kexec_load", unix.EPERM); !strings.Contains(err.Error(), "CAP_SYS_BOOT") {
		t.Errorf("no cause known: %v, want the general hint", err)
	}
}

func TestRunningKernel(t *testing.T) {
	p := filepath.Join(t.TempDir(), "iomem")
	iomem := `00000000-00000fff : Reserved
00001000-0009fbff : System RAM
00100000-1ffdffff : System RAM
  0b000000-0bc02566 : Kernel code
  0be00000-0c28afff : Kernel rodata
  0c400000-0c6f2e7f : Kernel data
  0ce1a000-0d1fffff : Kernel bss
fee00000-fee00fff : Local APIC
`
	if err := os.WriteFile(p, []byte(iomem), 0o644); err != nil {
		t.Fatal(err)
	}
	lo, hi, ok := runningKernel(p)
	if !ok || lo != 0x0b000000 || hi != 0x0d1fffff {
		t.Errorf("runningKernel = %#x–%#x, %v; want 0xb000000–0xd1fffff, true", lo, hi, ok)
	}
	// What an unprivileged reader sees: zeros, which say nothing.
	zeros := "00000000-00000000 : System RAM\n  00000000-00000000 : Kernel code\n"
	if err := os.WriteFile(p, []byte(zeros), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, ok := runningKernel(p); ok {
		t.Error("zeroed /proc/iomem gave a kernel range")
	}
}
