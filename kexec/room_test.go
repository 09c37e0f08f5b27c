package kexec

import (
	"bytes"
	"compress/gzip"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/therootcompany/xz"
)

// withMemAvailable makes memAvailable say kb kilobytes for the test.
func withMemAvailable(t *testing.T, kb uint64) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "meminfo")
	if err := os.WriteFile(p, []byte(fmt.Sprintf("MemTotal:  524288 kB\nMemFree:  1000 kB\nMemAvailable:  %d kB\n", kb)), 0o644); err != nil {
		t.Fatal(err)
	}
	old := meminfoPath
	meminfoPath = p
	t.Cleanup(func() { meminfoPath = old })
}

func TestMemAvailable(t *testing.T) {
	withMemAvailable(t, 390000)
	if n, ok := memAvailable(); !ok || n != 390000<<10 {
		t.Errorf("memAvailable = %d, %v", n, ok)
	}
	if err := roomFor("x", 190<<20); err != nil {
		t.Errorf("190 MiB of 380: %v", err)
	}
	if err := roomFor("the thing", 200<<20); !errors.Is(err, errNoRoom) || !strings.Contains(err.Error(), "the thing takes 200 MiB") {
		t.Errorf("200 MiB of 380: %v", err)
	}
	meminfoPath = "/nonexistent"
	if err := roomFor("x", 1<<40); err != nil {
		t.Errorf("without /proc/meminfo: %v", err)
	}
}

// A kernel that does not fit in half of the memory available is not held by the fast method:
// it falls back to the file method (not an ImageError), naming the file and the sizes.
func TestFastLoadRefusesWhatDoesNotFit(t *testing.T) {
	path := debianKernels(t)["xz"] // an 8 MB file, 58 MB laid out
	for _, tc := range []struct {
		kb   uint64
		want string
	}{{100 << 10, "the kernel, laid out, with its decoder's window, takes 120 MiB"}, {8 << 10, "the kernel file takes 7 MiB"}} {
		withMemAvailable(t, tc.kb)
		_, _, err := prepareFast(Image{Kernel: path})
		var bad *ImageError
		if !errors.Is(err, errNoRoom) || errors.As(err, &bad) || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), path) {
			t.Errorf("with %d kB available: %v", tc.kb, err)
		}
	}
}

// syntheticPayload is a gzip payload of an x86-64 ELF with one PT_LOAD segment of filesz bytes
// (its content not included) at the link address, followed by tail bytes of zeros.
func syntheticPayload(filesz uint64, tail int) *bzHeader {
	const base = 0x1000000
	eh := elf.Header64{Type: uint16(elf.ET_EXEC), Machine: uint16(elf.EM_X86_64), Version: 1, Entry: base,
		Phoff: 64, Ehsize: 64, Phentsize: 56, Phnum: 1}
	copy(eh.Ident[:], elf.ELFMAG)
	eh.Ident[elf.EI_CLASS], eh.Ident[elf.EI_DATA], eh.Ident[elf.EI_VERSION] = byte(elf.ELFCLASS64), byte(elf.ELFDATA2LSB), 1
	ph := elf.Prog64{Type: uint32(elf.PT_LOAD), Off: 0x1000, Paddr: base, Vaddr: startKernelMap + base, Filesz: filesz, Memsz: filesz}
	var raw bytes.Buffer
	binary.Write(&raw, binary.LittleEndian, eh)
	binary.Write(&raw, binary.LittleEndian, ph)
	raw.Write(make([]byte, 0x1000-raw.Len()))
	if filesz < 1<<20 {
		raw.Write(make([]byte, filesz))
	}
	raw.Write(make([]byte, tail))
	var gz bytes.Buffer
	w := gzip.NewWriter(&gz)
	w.Write(raw.Bytes())
	w.Close()
	return &bzHeader{prefAddress: base, compression: "gzip", payload: gz.Bytes(), rawSize: uint32(raw.Len())}
}

// Sizes a payload declares are checked before they are allocated: a 1 GiB segment against the
// memory available, the part after the segments against maxTail.
func TestExtractBoundsWhatItHolds(t *testing.T) {
	withMemAvailable(t, 400<<10)
	if _, err := syntheticPayload(0x2000, 100).extract(); err != nil {
		t.Fatalf("a small synthetic kernel: %v", err)
	}
	if _, err := syntheticPayload(1<<30, 0).extract(); !errors.Is(err, errNoRoom) || !strings.Contains(err.Error(), "1024 MiB") {
		t.Errorf("a 1 GiB segment with 400 MiB available: %v", err)
	}
	if _, err := syntheticPayload(0x2000, maxTail+1).extract(); !errors.Is(err, errNoRoom) || !strings.Contains(err.Error(), "after the kernel's segments") {
		t.Errorf("a tail of more than %d bytes: %v", maxTail, err)
	}
}

// An LZMA header asking for a dictionary larger than the kernel's build writes is refused before
// anything is allocated, as too big for the fast method (the file method may still boot it).
func TestLZMADictionaryBounded(t *testing.T) {
	hdr := []byte{0x5d, 0, 0, 0, 0x40, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff} // 1 GiB, size unknown
	if _, err := decoder("lzma", bytes.NewReader(append(hdr, make([]byte, 64)...))); !errors.Is(err, errNoRoom) {
		t.Errorf("an LZMA stream with a 1 GiB dictionary: %v", err)
	}
	hdr[4] = 0x04 // 64 MiB, what lzma -9 writes
	if _, err := decoder("lzma", bytes.NewReader(append(hdr, make([]byte, 64)...))); err != nil {
		t.Errorf("an LZMA stream with a 64 MiB dictionary: %v", err)
	}
}

// An initramfs that unpacks to more than an eighth of the memory available goes as it is.
func TestFastInitrdBoundedByMemory(t *testing.T) {
	archive := append([]byte("070701"), make([]byte, 3<<20)...)
	var gz bytes.Buffer
	w := gzip.NewWriter(&gz)
	w.Write(archive)
	w.Close()
	p := filepath.Join(t.TempDir(), "initrd.gz")
	if err := os.WriteFile(p, gz.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	withMemAvailable(t, 16<<10) // an eighth: 2 MiB
	data, note, err := fastInitrd(p)
	if err != nil || !bytes.Equal(data, gz.Bytes()) || !strings.Contains(note, "larger than 2 MiB unpacked") {
		t.Errorf("fastInitrd: %q, %v (%d bytes)", note, err, len(data))
	}
}

// A window above the fast method's cap is not a corrupt kernel: the file method is tried.
func TestTooBigFallsBack(t *testing.T) {
	for _, err := range []error{xz.ErrMemlimit, zstd.ErrWindowSizeExceeded, fmt.Errorf("read: %w", zstd.ErrWindowSizeExceeded)} {
		if got := payloadErr(&bzHeader{compression: "zstd"}, "ELF segments", err); !errors.Is(got, errNoRoom) {
			t.Errorf("payloadErr(%v) = %v, not errNoRoom", err, got)
		}
	}
	if got := payloadErr(&bzHeader{compression: "zstd"}, "ELF segments", errors.New("bad block")); errors.Is(got, errNoRoom) {
		t.Errorf("a corrupt payload taken for a large one: %v", got)
	}
}
