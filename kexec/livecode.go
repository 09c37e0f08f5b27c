package kexec

import (
	"bufio"
	"cmp"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	ukexec "github.com/u-root/u-root/pkg/boot/kexec"
)

// procPath is where liveCode looks for the processes; a variable for tests.
var procPath = "/proc"

const pageSize = 4096

// spareOldCode keeps the fast method's next kernel off the pages that hold the running
// system's code: the kernel's text and init text (kernelCode) and the programs' resident code
// (liveCode, runs less than 1 MiB apart joined). Every run is left out of the placement map (no
// segment goes there), and it returns them for the next kernel's memmap= (sparedHoles).
// Under QEMU's TCG a write to a page that held translated code goes the slow way until that
// code is invalidated, and the next kernel's boot writes all over its memory (the initramfs
// alone is 24 MB for the demo): kernel → /init took 4.05–4.16 s after fast kexecs of the demo,
// 3.17–3.76 s with these pages spared. On other machines it only costs the memory, so it is
// the TCG default only.
func spareOldCode(mem *ukexec.Memory, iomem, proc string) []pageRange {
	runs := append(kernelCode(iomem), joinNear(liveCode(proc), 256)...)
	slices.SortFunc(runs, func(a, b pageRange) int { return cmp.Compare(a.first, b.first) })
	runs = joinNear(runs, 0) // the kernel's code and a program's may touch
	for _, r := range runs {
		mem.Phys.Insert(ukexec.TypedRange{Range: ukexec.Range{Start: uintptr(r.first * pageSize), Size: uint(r.n * pageSize)}, Type: ukexec.RangeReserved})
	}
	return runs
}

// sparedHoles turns the runs into what the next kernel reserves with memmap=, and the bytes of
// RAM that takes: without the pages the kernel itself will occupy (with nokaslr, or without room
// for a random slot, it goes to its link address whatever is there — a kernel inside its own
// reservation would not be mapped), joined at the smallest gaps while there are more than
// maxSpared. None (0 bytes) when that would take more than an eighth of the RAM: the runs were
// too scattered to be worth it.
//
// memmap=, not the zero page's e820: the next kernel keeps the e820 it is given as the
// firmware's (/sys/firmware/memmap, which the next load reads), so holes put there would stay
// reserved in every later boot and add up kexec after kexec; memmap= changes only the map the
// kernel allocates from.
func sparedHoles(runs []pageRange, kernel pageRange, e820 []e820Entry) ([]pageRange, uint64) {
	var holes []pageRange
	for _, r := range runs {
		holes = append(holes, r.minus(kernel)...)
	}
	holes = joinSmallestGaps(holes, maxSpared)
	spared := ramBytes(e820) - ramBytes(carveE820(e820, holes))
	if spared > ramBytes(e820)/8 {
		return nil, 0
	}
	return holes, spared
}

// minus is r without the pages of o: none, one or two runs.
func (r pageRange) minus(o pageRange) []pageRange {
	end, oEnd := r.first+r.n, o.first+o.n
	if o.n == 0 || oEnd <= r.first || o.first >= end {
		return []pageRange{r}
	}
	var out []pageRange
	if o.first > r.first {
		out = append(out, pageRange{r.first, o.first - r.first})
	}
	if oEnd < end {
		out = append(out, pageRange{oEnd, end - oEnd})
	}
	return out
}

// joinSmallestGaps joins sorted runs across their smallest gaps until at most max are left, so
// the pages taken with them are as few as can be.
func joinSmallestGaps(rs []pageRange, max int) []pageRange {
	if len(rs) <= max {
		return rs
	}
	gaps := make([]int, len(rs)-1) // gap i lies between rs[i] and rs[i+1]
	for i := range gaps {
		gaps[i] = i
	}
	gap := func(i int) uint64 { return rs[i+1].first - (rs[i].first + rs[i].n) }
	slices.SortStableFunc(gaps, func(a, b int) int { return cmp.Compare(gap(a), gap(b)) })
	join := make([]bool, len(rs)-1)
	for _, i := range gaps[:len(rs)-max] {
		join[i] = true
	}
	out := []pageRange{rs[0]}
	for i := 1; i < len(rs); i++ {
		if last := &out[len(out)-1]; join[i-1] {
			last.n = rs[i].first + rs[i].n - last.first
		} else {
			out = append(out, rs[i])
		}
	}
	return out
}

// maxSpared bounds the memmap= entries: about 25 bytes each, of the 2,047 the command line holds.
const maxSpared = 24

// sparedParams are the kernel parameters that reserve holes: one memmap= of SIZE$ADDR entries,
// and baton.spared=, a checksum of that value, by which Reuse tells this memmap= from one the
// user wrote and leaves it out of the next command line.
func sparedParams(holes []pageRange) []string {
	if len(holes) == 0 {
		return nil
	}
	var b strings.Builder
	for i, h := range holes {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "%#x$%#x", h.n*pageSize, h.first*pageSize)
	}
	return []string{"memmap=" + b.String(), "baton.spared=" + sparedTag(b.String())}
}

// sparedTag is baton.spared='s value for a memmap= value.
func sparedTag(memmap string) string { return fmt.Sprintf("%08x", crc32.ChecksumIEEE([]byte(memmap))) }

func ramBytes(e820 []e820Entry) (n uint64) {
	for _, e := range e820 {
		if e.typ == 1 {
			n += e.size
		}
	}
	return n
}

// kernelCode returns the pages of the running kernel's text ("Kernel code" in /proc/iomem) and
// of its init text, which lies between the end of "Kernel data" and the start of "Kernel bss"
// (freed after boot, but it ran).
func kernelCode(iomem string) []pageRange {
	spans := iomemKernel(iomem)
	pages := func(first, last uint64) pageRange {
		return pageRange{first / pageSize, alignUp(last+1, pageSize)/pageSize - first/pageSize}
	}
	var out []pageRange
	if c, ok := spans["Kernel code"]; ok {
		out = append(out, pages(c[0], c[1]))
	}
	d, okD := spans["Kernel data"]
	bss, okB := spans["Kernel bss"]
	if okD && okB && alignUp(d[1]+1, pageSize) < bss[0]&^(pageSize-1) {
		out = append(out, pages(alignUp(d[1]+1, pageSize), bss[0]&^(pageSize-1)-1))
	}
	return out
}

// pageRange is a run of physical pages [first, first+n) by frame number.
type pageRange struct{ first, n uint64 }

// liveCode returns the physical pages that hold the running programs' code: the resident pages
// of every process's executable mappings, found through /proc/PID/maps and /proc/PID/pagemap
// (frame numbers need CAP_SYS_ADMIN; without it they read as zero and none are found). Pages
// shared by several processes count once; adjacent pages are joined.
func liveCode(proc string) []pageRange {
	dirs, _ := filepath.Glob(filepath.Join(proc, "[0-9]*"))
	seen := map[uint64]bool{}
	for _, d := range dirs {
		for _, f := range codePagesOf(d) {
			seen[f] = true
		}
	}
	frames := make([]uint64, 0, len(seen))
	for f := range seen {
		frames = append(frames, f)
	}
	slices.Sort(frames)
	var out []pageRange
	for _, f := range frames {
		if n := len(out); n > 0 && out[n-1].first+out[n-1].n == f {
			out[n-1].n++
			continue
		}
		out = append(out, pageRange{f, 1})
	}
	return out
}

// codePagesOf returns the frame numbers of the resident pages of one process's executable
// mappings (none for a kernel thread, or a process gone meanwhile).
func codePagesOf(dir string) []uint64 {
	maps, err := os.Open(filepath.Join(dir, "maps"))
	if err != nil {
		return nil
	}
	defer maps.Close()
	pm, err := os.Open(filepath.Join(dir, "pagemap"))
	if err != nil {
		return nil
	}
	defer pm.Close()
	var out []uint64
	sc := bufio.NewScanner(maps)
	for sc.Scan() {
		// 00400000-00a4b000 r-xp 00000000 00:02 12 /init
		f := strings.Fields(sc.Text())
		if len(f) < 2 || len(f[1]) < 3 || f[1][2] != 'x' {
			continue
		}
		a, z, ok := strings.Cut(f[0], "-")
		start, err1 := strconv.ParseUint(a, 16, 64)
		end, err2 := strconv.ParseUint(z, 16, 64)
		if !ok || err1 != nil || err2 != nil || end <= start || (end-start)/pageSize > 1<<20 {
			continue
		}
		buf := make([]byte, 8*((end-start)/pageSize))
		n, _ := pm.ReadAt(buf, int64(start/pageSize*8))
		for i := 0; i+8 <= n; i += 8 {
			e := binary.LittleEndian.Uint64(buf[i:])
			if e&(1<<63) != 0 { // present
				if pfn := e & (1<<55 - 1); pfn != 0 {
					out = append(out, pfn)
				}
			}
		}
	}
	return out
}

// joinNear joins page runs at most gap pages apart (what lies between is taken too), so a
// few runs stand for many.
func joinNear(rs []pageRange, gap uint64) []pageRange {
	var out []pageRange
	for _, r := range rs {
		if n := len(out); n > 0 && r.first <= out[n-1].first+out[n-1].n+gap {
			out[n-1].n = max(out[n-1].first+out[n-1].n, r.first+r.n) - out[n-1].first
			continue
		}
		out = append(out, r)
	}
	return out
}

// carveE820 marks holes (page runs, sorted, not overlapping) reserved where they fall in RAM
// entries, splitting them; the result is sorted by address. It only counts what memmap= will
// take (sparedHoles): the zero page gets the firmware's map.
func carveE820(e820 []e820Entry, holes []pageRange) []e820Entry {
	var out []e820Entry
	for _, e := range e820 {
		if e.typ != 1 {
			out = append(out, e)
			continue
		}
		at, end := e.addr, e.addr+e.size
		for _, h := range holes {
			lo, hi := max(h.first*pageSize, at), min((h.first+h.n)*pageSize, end)
			if lo >= hi {
				continue
			}
			if lo > at {
				out = append(out, e820Entry{addr: at, size: lo - at, typ: 1})
			}
			out = append(out, e820Entry{addr: lo, size: hi - lo, typ: 2})
			at = hi
		}
		if at < end {
			out = append(out, e820Entry{addr: at, size: end - at, typ: 1})
		}
	}
	slices.SortFunc(out, func(a, b e820Entry) int { return cmp.Compare(a.addr, b.addr) })
	return out
}
