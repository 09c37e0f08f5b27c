package system

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// SetHostname sets the kernel's host name (the UTS name every process sees).
func SetHostname(name string) error {
	if err := unix.Sethostname([]byte(name)); err != nil {
		return fmt.Errorf("sethostname(%q): %w", name, err)
	}
	return nil
}
