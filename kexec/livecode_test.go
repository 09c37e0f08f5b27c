package kexec

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"reflect"
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
	runs := spareOldCode(mem, p, fakeProc(t))
	holes, spared := sparedHoles(runs, pageRange{0x20000, 0x1000}, e820)
	// text, init, and frames 0x100–0x200: less than 1 MiB apart, joined
	want := uint64(0xe00000 + 0x549000 + 0x101000)
	if spared != want || len(holes) != 3 || !reflect.DeepEqual(holes, runs) {
		t.Errorf("spared %#x in %d holes (%v, runs %v), want %#x in 3", spared, len(holes), holes, runs, want)
	}
	// The kernel at its link address, over the old kernel's text: those pages are not reserved.
	k := pageRange{0xb000, 0x400} // 0xb000000–0xb400000
	holes, spared = sparedHoles(runs, k, e820)
	for _, h := range holes {
		if h.first < k.first+k.n && k.first < h.first+h.n {
			t.Errorf("hole %#x+%#x overlaps the kernel's pages %#x+%#x", h.first, h.n, k.first, k.n)
		}
	}
	if spared != want-0x400000 {
		t.Errorf("with the kernel over the old text: spared %#x, want %#x", spared, want-0x400000)
	}
	for _, a := range []uintptr{0xb000000, 0xcc50000, 0x100000, 0x180000, 0x200000} {
		for _, r := range mem.AvailableRAM() {
			if r.Contains(a) {
				t.Errorf("%#x is still free for a segment", a)
			}
		}
	}
}

// More runs than memmap= takes are joined at their smallest gaps; runs so scattered that the
// holes would take more than an eighth of the RAM are not reserved at all.
func TestSparedHolesBounded(t *testing.T) {
	runs := []pageRange{{0x100, 1}, {0x110, 1}, {0x1000, 1}, {0x1002, 1}, {0x5000, 1}, {0x5100, 1}}
	if got, want := joinSmallestGaps(runs, 3), []pageRange{{0x100, 0x11}, {0x1000, 3}, {0x5000, 0x101}}; !reflect.DeepEqual(got, want) {
		t.Errorf("joinSmallestGaps to 3 = %#x, want %#x", got, want)
	}
	if got := joinSmallestGaps(runs, 6); !reflect.DeepEqual(got, runs) {
		t.Errorf("joinSmallestGaps within the bound changed the runs: %#x", got)
	}
	ram := []e820Entry{{0x100000, 0x3ff00000, 1}} // 1 GiB
	var many []pageRange
	for i := uint64(0); i < 3*maxSpared; i++ {
		many = append(many, pageRange{0x1000 + i*0x100, 1}) // a page every MiB
	}
	holes, spared := sparedHoles(many, pageRange{}, ram)
	if len(holes) != maxSpared || spared == 0 || spared > 128<<20 {
		t.Errorf("%d pages a MiB apart: %d holes, %d MiB", len(many), len(holes), spared>>20)
	}
	var scattered []pageRange
	for i := uint64(0); i < 3*maxSpared; i++ {
		scattered = append(scattered, pageRange{0x1000 + i*0x1000, 1}) // a page every 16 MiB
	}
	if holes, spared := sparedHoles(scattered, pageRange{}, ram); holes != nil || spared != 0 {
		t.Errorf("pages 16 MiB apart: %d holes taking %d MiB, want none", len(holes), spared>>20)
	}
}

// minus cuts a run out of another: nothing, its head, its tail, or its middle.
func TestPageRangeMinus(t *testing.T) {
	r := pageRange{10, 10}
	for _, tc := range []struct {
		o    pageRange
		want []pageRange
	}{
		{pageRange{0, 5}, []pageRange{r}},
		{pageRange{20, 5}, []pageRange{r}},
		{pageRange{12, 0}, []pageRange{r}},
		{pageRange{5, 10}, []pageRange{{15, 5}}},
		{pageRange{15, 10}, []pageRange{{10, 5}}},
		{pageRange{12, 3}, []pageRange{{10, 2}, {15, 5}}},
		{pageRange{0, 100}, nil},
	} {
		if got := r.minus(tc.o); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%v minus %v = %v, want %v", r, tc.o, got, tc.want)
		}
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
