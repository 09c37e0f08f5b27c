package kexec

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	ukexec "github.com/u-root/u-root/pkg/boot/kexec"
)

// fakeProc writes a /proc with two processes: executable mappings whose present pages are
// frames 0x100, 0x101 (pid 1) and 0x101, 0x200 (pid 7); a writable mapping and a page not
// present are not code; a kernel thread has an empty maps.
func fakeProc(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	write := func(pid, maps string, pages map[uint64]uint64) {
		d := filepath.Join(dir, pid)
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, "maps"), []byte(maps), 0o644); err != nil {
			t.Fatal(err)
		}
		f, err := os.Create(filepath.Join(d, "pagemap"))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		for vpage, e := range pages {
			var b [8]byte
			binary.LittleEndian.PutUint64(b[:], e)
			if _, err := f.WriteAt(b[:], int64(vpage*8)); err != nil {
				t.Fatal(err)
			}
		}
	}
	const present = 1 << 63
	write("1", "00400000-00403000 r-xp 00000000 00:02 12 /init\n00403000-00404000 rw-p 00003000 00:02 12 /init\n",
		map[uint64]uint64{0x400: present | 0x100, 0x401: present | 0x101, 0x402: 0x102, 0x403: present | 0x300})
	write("7", "7f0000000000-7f0000002000 r-xp 00000000 00:02 14 /bin/web\n",
		map[uint64]uint64{0x7f0000000: present | 0x101, 0x7f0000001: present | 0x200})
	write("2", "", nil)
	return dir
}

func TestLiveCode(t *testing.T) {
	got := liveCode(fakeProc(t))
	if want := []pageRange{{0x100, 2}, {0x200, 1}}; !reflect.DeepEqual(got, want) {
		t.Errorf("liveCode = %v, want %v", got, want)
	}
	if got := joinNear([]pageRange{{0x100, 2}, {0x110, 1}, {0x200, 1}}, 0x20); !reflect.DeepEqual(got, []pageRange{{0x100, 0x11}, {0x200, 1}}) {
		t.Errorf("joinNear = %v", got)
	}
}

const testIomem = `00100000-1ffdffff : System RAM
  0b000000-0bdfffff : Kernel code
  0be00000-0c8bdfff : Kernel rodata
  0ca00000-0cc4f0ff : Kernel data
  0d199000-0e1fffff : Kernel bss
`

func TestKernelCode(t *testing.T) {
	p := filepath.Join(t.TempDir(), "iomem")
	if err := os.WriteFile(p, []byte(testIomem), 0o644); err != nil {
		t.Fatal(err)
	}
	// text 0xb000000–0xbe00000; init from data's end to bss: 0xcc50000–0xd199000
	want := []pageRange{{0xb000, 0xe00}, {0xcc50, 0xd199 - 0xcc50}}
	if got := kernelCode(p); !reflect.DeepEqual(got, want) {
		t.Errorf("kernelCode = %#x, want %#x", got, want)
	}
}

func TestCarveE820(t *testing.T) {
	e820 := []e820Entry{{0, 0x9fc00, 1}, {0x9fc00, 0x400, 2}, {0x100000, 0x1fee0000, 1}, {0xfffc0000, 0x40000, 2}}
	got := carveE820(e820, []pageRange{{0x3000, 0x100}, {0x1ff00, 0x200}}) // 0x3000000–0x3100000, 0x1ff00000–0x20100000
	want := []e820Entry{{0, 0x9fc00, 1}, {0x9fc00, 0x400, 2}, {0x100000, 0x2f00000, 1}, {0x3000000, 0x100000, 2},
		{0x3100000, 0x1ff00000 - 0x3100000, 1}, {0x1ff00000, 0x1ffe0000 - 0x1ff00000, 2}, {0xfffc0000, 0x40000, 2}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("carveE820 =\n%#x\nwant\n%#x", got, want)
	}
}

// spareOldCode returns the kernel's text and init text and the programs' code as holes for the
// next kernel's memmap=, leaves them out of the placement map, and says how much RAM they take.
func TestSpareOldCode(t *testing.T) {
	p := filepath.Join(t.TempDir(), "iomem")
	if err := os.WriteFile(p, []byte(testIomem), 0o644); err != nil {
		t.Fatal(err)
	}
	e820 := []e820Entry{{0x100000, 0x1fee0000, 1}}
	var mm ukexec.MemoryMap
	mm.Insert(ukexec.TypedRange{Range: ukexec.Range{Start: 0x100000, Size: 0x1fee0000}, Type: ukexec.RangeRAM})
	mem := &ukexec.Memory{Phys: mm}
	holes, spared := spareOldCode(mem, e820, p, fakeProc(t))
	// text, init, and frames 0x100–0x200: less than 1 MiB apart, joined
	want := uint64(0xe00000 + 0x549000 + 0x101000)
	if spared != want || len(holes) != 3 {
		t.Errorf("spared %#x in %d holes, want %#x in 3", spared, len(holes), want)
	}
	for _, a := range []uintptr{0xb000000, 0xcc50000, 0x100000, 0x180000, 0x200000} {
		for _, r := range mem.AvailableRAM() {
			if r.Contains(a) {
				t.Errorf("%#x is still free for a segment", a)
			}
		}
	}
}

// More code runs than memmap= takes are joined across wider gaps until they fit.
func TestSpareOldCodeBoundsTheHoles(t *testing.T) {
	dir := t.TempDir()
	pages := map[uint64]uint64{}
	for i := uint64(0); i < 3*maxSpared; i++ {
		pages[i] = 0x1000 + i*0x400 // one code page every 4 MiB
	}
	d := filepath.Join(dir, "1")
	if err := os.MkdirAll(d, 0o755); err != nil {
		t.Fatal(err)
	}
	maps := fmt.Sprintf("00000000-%08x r-xp 00000000 00:01 1 /bin/x\n", 3*maxSpared*pageSize)
	pm := make([]byte, 8*3*maxSpared)
	for vpn, pfn := range pages {
		binary.LittleEndian.PutUint64(pm[8*vpn:], 1<<63|pfn)
	}
	if err := os.WriteFile(filepath.Join(d, "maps"), []byte(maps), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(d, "pagemap"), pm, 0o644); err != nil {
		t.Fatal(err)
	}
	var mm ukexec.MemoryMap
	mm.Insert(ukexec.TypedRange{Range: ukexec.Range{Start: 0x100000, Size: 0x3ff00000}, Type: ukexec.RangeRAM})
	holes, spared := spareOldCode(&ukexec.Memory{Phys: mm}, []e820Entry{{0x100000, 0x3ff00000, 1}}, "/nonexistent", dir)
	if len(holes) == 0 || len(holes) > maxSpared {
		t.Fatalf("%d holes, want 1–%d", len(holes), maxSpared)
	}
	for _, pfn := range pages {
		in := false
		for _, h := range holes {
			in = in || pfn >= h.first && pfn < h.first+h.n
		}
		if !in {
			t.Errorf("code page %#x not spared", pfn)
		}
	}
	if line := strings.Join(sparedParams(holes), " "); len(line) > 30*maxSpared {
		t.Errorf("%d bytes of parameters for %d holes (%d MiB): %s", len(line), len(holes), spared>>20, line)
	}
}

// addHighSegment takes the highest free place within its limits, page-aligned, around what is
// taken already.
func TestAddHighSegment(t *testing.T) {
	var mm ukexec.MemoryMap
	mm.Insert(ukexec.TypedRange{Range: ukexec.Range{Start: 0x100000, Size: 0x1fee0000}, Type: ukexec.RangeRAM})
	mm.Insert(ukexec.TypedRange{Range: ukexec.Range{Start: 0x1fe00000, Size: 0x100000}, Type: ukexec.RangeReserved})
	mem := &ukexec.Memory{Phys: mm}
	data := make([]byte, 0x180001) // more than the 896 KiB above the hole
	r, ok := addHighSegment(mem, data, 1<<20, 1<<32)
	if !ok || r.Start != 0x1fe00000-0x181000 || r.Size != 0x181000 {
		t.Fatalf("placed at %#x+%#x (%v), want %#x+0x181000", r.Start, r.Size, ok, 0x1fe00000-0x181000)
	}
	r2, ok := addHighSegment(mem, make([]byte, 4096), 1<<20, 1<<32)
	if !ok || r2.Start != 0x1ffdf000 {
		t.Errorf("a page placed at %#x, want 0x1ffdf000 (above the hole)", r2.Start)
	}
	if _, ok := addHighSegment(mem, make([]byte, 0x20000000), 1<<20, 1<<32); ok {
		t.Error("512 MiB placed in less")
	}
}
