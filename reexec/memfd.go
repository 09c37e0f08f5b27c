package reexec

import (
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"syscall"

	"golang.org/x/sys/unix"
)

// Memfd creates an anonymous file named name. With keep it survives execve (no close-on-exec).
func Memfd(name string, keep bool) (*os.File, error) {
	flags := unix.MFD_CLOEXEC
	if keep {
		flags = 0
	}
	fd, err := unix.MemfdCreate(name, flags)
	if err != nil {
		return nil, fmt.Errorf("memfd_create(%q): %w", name, err)
	}
	return os.NewFile(uintptr(fd), "memfd:"+name), nil
}

// WriteState puts an encoded state into a memfd that survives execve.
func WriteState(data []byte) (*os.File, error) {
	f, err := Memfd("baton-state", true)
	if err != nil {
		return nil, err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return nil, fmt.Errorf("write state memfd: %w", err)
	}
	return f, nil
}

// ReadFd reads the whole file at fd from its start, at most MaxSize+header bytes.
func ReadFd(fd int) ([]byte, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, fmt.Errorf("fstat(%d): %w", fd, err)
	}
	if st.Size > MaxSize+int64(headerSize) {
		return nil, fmt.Errorf("state fd %d: %d bytes, more than a state may have", fd, st.Size)
	}
	buf := make([]byte, st.Size)
	n, err := unix.Pread(fd, buf, 0)
	if err != nil {
		return nil, fmt.Errorf("pread(%d): %w", fd, err)
	}
	return buf[:n], nil
}

// CopyToMemfd copies r into a memfd (close-on-exec until KeepOpen) and returns it with the
// SHA-256 of what was copied.
func CopyToMemfd(name string, r io.Reader) (*os.File, string, error) {
	f, err := Memfd(name, false)
	if err != nil {
		return nil, "", err
	}
	h := sha256.New()
	if _, err := io.Copy(io.MultiWriter(f, h), r); err != nil {
		f.Close()
		return nil, "", fmt.Errorf("copy into memfd %s: %w", name, err)
	}
	return f, hex.EncodeToString(h.Sum(nil)), nil
}

// SelfDigest is the SHA-256 of the running binary (/proc/self/exe).
func SelfDigest() (string, error) { return FileDigest("/proc/self/exe") }

// FileDigest is the SHA-256 of the file at path.
func FileDigest(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// ErrNotExecutable is a binary that cannot be this machine's init.
var ErrNotExecutable = errors.New("not a static executable for this machine")

// CheckBinary refuses what PID 1 must not execute: not ELF, another architecture, a shared
// library, or dynamically linked (an interpreter that an appliance may not have, and that a
// memfd exec could not find again).
func CheckBinary(r io.ReaderAt) error {
	f, err := elf.NewFile(r)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrNotExecutable, err)
	}
	defer f.Close()
	want := map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64, "386": elf.EM_386, "riscv64": elf.EM_RISCV}[runtime.GOARCH]
	if f.Machine != want {
		return fmt.Errorf("%w: it is for %s, this machine is %s", ErrNotExecutable, f.Machine, runtime.GOARCH)
	}
	if f.Type != elf.ET_EXEC && f.Type != elf.ET_DYN {
		return fmt.Errorf("%w: ELF type %s", ErrNotExecutable, f.Type)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("%w: dynamically linked (it names an ELF interpreter); build it with CGO_ENABLED=0", ErrNotExecutable)
		}
	}
	if f.Type == elf.ET_DYN && f.Entry == 0 {
		return fmt.Errorf("%w: a shared library, not a program", ErrNotExecutable)
	}
	return nil
}

// KeepOpen clears close-on-exec on fd: it survives the next execve.
func KeepOpen(fd int) error {
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFD, 0); err != nil {
		return fmt.Errorf("fcntl(%d, F_SETFD, 0): %w", fd, err)
	}
	return nil
}

// IsOpen reports whether fd is an open descriptor.
func IsOpen(fd int) bool {
	_, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
	return err == nil
}

// Exec replaces this process image with the binary open at fd: it returns only on failure.
// Through /proc/self/fd (what fexecve does) and syscall.Exec, which keeps Go's runtime out of
// the way of the execve (no thread is created meanwhile) and restores the fd limit Go raised.
func Exec(fd int, argv, env []string) error {
	path := fmt.Sprintf("/proc/self/fd/%d", fd)
	if err := syscall.Exec(path, argv, env); err != nil {
		return fmt.Errorf("execve(%s): %w", path, err)
	}
	return nil
}
