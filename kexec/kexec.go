// Package kexec loads, unloads and executes a new kernel with kexec_file_load(2), with errors
// that say what to do about them.
package kexec

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// Image is what to boot.
type Image struct {
	Kernel  string // bzImage path
	Initrd  string // "" for none (KEXEC_FILE_NO_INITRAMFS)
	Cmdline string
	// SpareOldCode (fast method): the next kernel's memory map leaves out the pages that hold
	// the running system's code, and no segment goes there (see spareOldCode).
	SpareOldCode bool
}

// Error is a failed kexec system call, with the errno, what it means here and what to do.
type Error struct {
	Op    string // the call and its arguments, as a person would retype them
	Errno unix.Errno
	Hint  string
}

func (e *Error) Error() string {
	if e.Hint == "" {
		return fmt.Sprintf("%s: %v", e.Op, e.Errno)
	}
	return fmt.Sprintf("%s: %v — %s", e.Op, e.Errno, e.Hint)
}

func (e *Error) Unwrap() error { return e.Errno }

// hints are DESIGN.md's list: each errno of kexec_file_load, and what a person can do.
var hints = map[unix.Errno]string{
	unix.ENOSYS:       "this kernel has no kexec_file_load (CONFIG_KEXEC_FILE); reboot through the firmware instead",
	unix.EPERM:        "kexec is not permitted: kernel.kexec_load_disabled is set (it cannot be unset until reboot), lockdown forbids it, or the caller lacks CAP_SYS_BOOT",
	unix.EKEYREJECTED: "the kernel's signature was rejected: this kernel requires signed images (KEXEC_SIG / secure boot); use a kernel signed by a trusted key",
	unix.EBADMSG:      "the kernel image carries no valid signature and this kernel requires one (KEXEC_SIG / secure boot)",
	unix.ENOEXEC:      "not a kernel this kernel can load: kexec_file_load takes an x86 bzImage (vmlinuz), not an ELF vmlinux, an initramfs or a compressed file",
	unix.ENOMEM:       "not enough memory to place the image: stop services and retry, or use a smaller initramfs",
	unix.EBUSY:        "another kexec load or a crash kernel operation is in progress; retry",
	unix.EINVAL:       "the kernel rejected the image or the command line (too long? a corrupt bzImage?)",
	unix.ENOENT:       "file not found",
}

// Load places img in memory for a later Exec. The running system is untouched: a refused load
// costs no downtime.
func Load(img Image) error {
	kf, err := os.Open(img.Kernel)
	if err != nil {
		return fmt.Errorf("kexec load: kernel: %w", err)
	}
	defer kf.Close()
	initrdFd, flags := -1, 0
	if img.Initrd == "" {
		flags |= unix.KEXEC_FILE_NO_INITRAMFS
	} else {
		f, err := os.Open(img.Initrd)
		if err != nil {
			return fmt.Errorf("kexec load: initrd: %w", err)
		}
		defer f.Close()
		initrdFd = int(f.Fd())
	}
	// The kernel copies the command line; it must be NUL-terminated and counts the NUL.
	if err := unix.KexecFileLoad(int(kf.Fd()), initrdFd, img.Cmdline, flags); err != nil {
		return callError(fmt.Sprintf("kexec_file_load(%s, %s, %q, %#x)", img.Kernel, orNone(img.Initrd), img.Cmdline, flags), err)
	}
	return nil
}

// Unload drops a loaded image.
func Unload() error {
	if err := unix.KexecFileLoad(-1, -1, "", unix.KEXEC_FILE_UNLOAD); err != nil {
		return callError("kexec_file_load(unload)", err)
	}
	return nil
}

// Loaded reports whether an image is loaded (/sys/kernel/kexec_loaded).
func Loaded() (bool, error) {
	b, err := os.ReadFile("/sys/kernel/kexec_loaded")
	if err != nil {
		return false, err
	}
	return strings.TrimSpace(string(b)) == "1", nil
}

// Exec jumps into the loaded kernel. It returns only on failure. Everything must be stopped,
// synced and unmounted before: this is a reboot without the firmware.
func Exec() error {
	if err := unix.Reboot(unix.LINUX_REBOOT_CMD_KEXEC); err != nil {
		return callError("reboot(LINUX_REBOOT_CMD_KEXEC)", err)
	}
	return nil
}

func callError(op string, err error) error {
	var errno unix.Errno
	if !errors.As(err, &errno) {
		return fmt.Errorf("%s: %w", op, err)
	}
	hint := hints[errno]
	if errno == unix.EPERM {
		if why := notPermitted(); why != "" {
			hint = why
		}
	}
	return &Error{Op: op, Errno: errno, Hint: hint}
}

// Where the running kernel says why kexec is refused; variables for tests.
var (
	loadDisabledPath = "/proc/sys/kernel/kexec_load_disabled"
	lockdownPaths    = []string{"/sys/kernel/security/lockdown", "/proc/cmdline"}
)

// notPermitted names the cause of an EPERM when the running kernel tells it: the sysctl, or
// lockdown (securityfs shows the mode; without it mounted, the command line's lockdown=).
func notPermitted() string {
	if b, err := os.ReadFile(loadDisabledPath); err == nil && strings.TrimSpace(string(b)) == "1" {
		return "kernel.kexec_load_disabled is set: this kernel refuses every kexec load until the next firmware boot; use initctl reboot"
	}
	mode := ""
	if b, err := os.ReadFile(lockdownPaths[0]); err == nil {
		// "none [integrity] confidentiality": the bracketed one is in force.
		if i, j := strings.Index(string(b), "["), strings.Index(string(b), "]"); i >= 0 && j > i {
			mode = string(b)[i+1 : j]
		}
	} else if b, err := os.ReadFile(lockdownPaths[1]); err == nil {
		for _, p := range strings.Fields(string(b)) {
			if v, ok := strings.CutPrefix(p, "lockdown="); ok {
				mode = v
			}
		}
	}
	if mode == "" || mode == "none" {
		return ""
	}
	return "the kernel is locked down (" + mode + "): kexec_load is forbidden, and kexec_file_load takes only an image signed by a key in the kernel's keyrings (UEFI Secure Boot's db, or built in); use a signed kernel or initctl reboot"
}

func orNone(s string) string {
	if s == "" {
		return "no initrd"
	}
	return s
}
