package kexec

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// The fast method holds the kernel, laid out, and the initrd in baton's own memory until
// kexec_load has copied them. In PID 1 a Go allocation that fails is not an error but the end
// of the process, and of the machine: so what a load is about to hold is checked first
// against what the kernel says is available, and a kernel or initrd that would not fit is
// refused with its size, before anything stops. Real ones are far below: Debian's 6.1 is an
// 8 MB file laid out in 58 MB, the demo's initramfs 7 MB unpacked to 24 MB, against 380 MB
// available in the demo guest.

// meminfoPath is read for MemAvailable; a variable for tests.
var meminfoPath = "/proc/meminfo"

// memAvailable is MemAvailable in bytes; false when the kernel does not say.
func memAvailable() (uint64, bool) {
	f, err := os.Open(meminfoPath)
	if err != nil {
		return 0, false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "MemAvailable:"); ok {
			kb, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10, err == nil
		}
	}
	return 0, false
}

// errNoRoom is a fast load refused for baton's memory: the file method, where the kernel reads
// the files itself, may still load it.
var errNoRoom = errors.New("not enough memory for the fast method")

// roomFor refuses to hold n more bytes when they are more than half of MemAvailable.
func roomFor(what string, n uint64) error {
	avail, ok := memAvailable()
	if !ok || n <= avail/2 {
		return nil
	}
	return fmt.Errorf("%s takes %d MiB, more than half of the %d MiB available (MemAvailable): %w", what, n>>20, avail>>20, errNoRoom)
}

// roomForFile is roomFor of a regular file's size, before it is read whole.
func roomForFile(what, path string) error {
	if fi, err := os.Stat(path); err == nil && fi.Mode().IsRegular() {
		return roomFor(what, uint64(fi.Size()))
	}
	return nil // reading it says what is wrong
}

// maxTail bounds what follows the kernel's last segment in its payload: the section headers
// and the relocation table (Debian's 6.1: under 1 MB).
const maxTail = 64 << 20

// Dictionaries and windows the decoders may allocate: the largest the kernel's own build
// writes (lzma -9: 64 MiB; zstd -22 --ultra: a window of 2^27).
const (
	maxLZMADict   = 64 << 20
	maxZstdWindow = 128 << 20
)

// decoderMemory is about what a decoder of kind holds while it streams size bytes out: its
// dictionary or window, which never exceeds what it decompresses.
func decoderMemory(kind string, size uint64) uint64 {
	switch kind {
	case "xz", "lzma":
		return min(maxLZMADict, size)
	case "zstd":
		return min(maxZstdWindow, size)
	}
	return min(8<<20, size) // gzip's 32 KiB window, lz4's 8 MB blocks, bzip2's 900 kB ones
}
