package kexec

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"time"
	"unsafe"

	ukexec "github.com/u-root/u-root/pkg/boot/kexec"
	"golang.org/x/sys/unix"
)

// The fast method loads with kexec_load(2): the kernel already decompressed and relocated, a
// zero page, the initrd, the command line and an 18-byte purgatory, none of it hashed. At the
// jump the old kernel copies the segments into place and enters the purgatory, which points
// %rsi at the zero page and jumps to startup_64: no SHA-256 pass over the segments
// (kexec_file_load's purgatory always does one) and no decompression (the bzImage's own
// decompressor is skipped).

// FastInfo is what a fast load did, for the log and the API's answer.
type FastInfo struct {
	Compression string        // the payload's
	Extract     time.Duration // decompressing and laying out the kernel
	KASLR       string        // what happened to KASLR, in words
	PhysAddr    uint64        // where the kernel will run
	Initrd      string        // what was done to the initrd, in words
}

// loadFast does the fast method's load. The kernel never sees a half-built image: everything
// is prepared in memory first, then one kexec_load call replaces the loaded image (if any).
func loadFast(img Image) (FastInfo, error) {
	var info FastInfo
	// Ask first whether kexec_load is allowed at all (lockdown, kexec_load_disabled): a
	// refusal then costs no decompression. Zero segments unload, which a load replaces anyway.
	if err := rawKexecLoad(0, nil); err != nil {
		return info, callError("kexec_load", err)
	}
	h, k, err := prepareFast(img)
	if err != nil {
		return info, err
	}
	info.Compression, info.Extract = h.compression, k.took
	defer func() {
		// Tens of megabytes were only needed until kexec_load copied them into the kernel.
		k = nil
		runtime.GC()
		debug.FreeOSMemory()
	}()

	mm, e820, err := firmwareMemoryMap()
	if err != nil {
		return info, err
	}
	if len(img.Cmdline) > h.cmdlineSize {
		return info, fmt.Errorf("kexec: the command line is %d bytes; this kernel takes %d at most", len(img.Cmdline), h.cmdlineSize)
	}
	cmd := cmdlineFlagsOf(img.Cmdline)
	mem := &ukexec.Memory{Phys: mm}
	// Every segment goes beside the running kernel's image, not over it (this map only steers
	// the placement; the next kernel's e820 is the firmware's). kexec may overwrite
	// it, but under QEMU's TCG writing over pages that hold translated code is slow: the jump
	// took 1.4–2.4 s instead of 0.9 s in 4 of 8 benchmark runs.
	var avoided string
	if lo, hi, ok := runningKernel(iomemPath); ok {
		mem.Phys.Insert(ukexec.TypedRange{Range: ukexec.RangeFromInclusiveInterval(uintptr(lo), uintptr(hi)), Type: ukexec.RangeReserved})
		avoided = fmt.Sprintf("running kernel at %#x–%#x avoided", lo, hi)
	}
	var oldCode []pageRange
	if img.SpareOldCode {
		oldCode = spareOldCode(mem, iomemPath, procPath)
	}

	// Physical placement: a random aligned slot with room for the whole init_size, as the
	// decompressor's choose_random_location does; the link address with nokaslr.
	size := alignUp(k.memSize, 4096)
	phys := h.prefAddress
	var kaslr []string
	if cmd.nokaslr {
		kaslr = append(kaslr, "off (nokaslr on the command line)")
	} else if p, ok := randomPhysSlot(mem.AvailableRAM(), size, h.kernelAlign, h.prefAddress); ok {
		phys = p
		kaslr = append(kaslr, fmt.Sprintf("physical %#x", phys))
	} else {
		kaslr = append(kaslr, "physical: no room for a random slot, at the link address")
	}
	virtual := uint64(0)
	if !cmd.nokaslr {
		if virtual, err = randomVirtualDelta(h.prefAddress, size, h.kernelAlign); err != nil {
			return info, fmt.Errorf("kexec: random virtual offset: %w", err)
		}
	}
	if virtual != 0 {
		if err := k.relocate(h.prefAddress, virtual); err != nil {
			return info, &ImageError{Path: img.Kernel, Err: err}
		}
		kaslr = append(kaslr, fmt.Sprintf("virtual +%#x", virtual))
	}
	cmdline := img.Cmdline
	if img.SpareOldCode {
		// Not reserved, the runs are still kept from the segments, at no cost.
		holes, spared := sparedHoles(oldCode, pageRange{phys / pageSize, size / pageSize}, e820)
		with := strings.TrimSpace(strings.Join(append([]string{cmdline}, sparedParams(holes)...), " "))
		var note string
		switch {
		case len(holes) == 0:
			note = "old code not spared: its pages lie too scattered"
		case len(with) > h.cmdlineSize:
			note = "old code not spared: the command line has no room for its memmap="
		default:
			// memmap= entries, not MiB only: the next kernel's /proc/cmdline shows them.
			cmdline, note = with, fmt.Sprintf("old code spared (%d MiB, %d memmap= holes)", spared>>20, len(holes))
		}
		avoided = strings.TrimPrefix(avoided+", "+note, ", ")
	}
	if avoided != "" {
		kaslr = append(kaslr, avoided)
	}
	info.KASLR, info.PhysAddr = strings.Join(kaslr, ", "), phys
	// The whole of init_size is kept from the other segments, but only what the kernel does
	// not clear itself is copied at the jump: the old kernel copies each page of a segment
	// there, and under QEMU's TCG that copy is part of the downtime (Debian's 6.1: 64 MB of
	// init_size, of which 40 MB copied).
	mem.Phys.Insert(ukexec.TypedRange{Range: ukexec.Range{Start: uintptr(phys), Size: uint(size)}, Type: ukexec.RangeReserved})
	for _, c := range k.copied() {
		mem.Segments.Insert(ukexec.NewSegment(k.mem[c.off:c.end], ukexec.Range{Start: uintptr(phys + c.off), Size: uint(c.end - c.off)}))
	}

	var initrdRange ukexec.Range
	if img.Initrd != "" {
		rd, note, err := fastInitrd(img.Initrd)
		if err != nil {
			return info, fmt.Errorf("kexec load: initrd: %w", err)
		}
		info.Initrd = note
		var ok bool
		if initrdRange, ok = addHighSegment(mem, rd, 1<<20, 1<<32); !ok {
			return info, fmt.Errorf("kexec: no room for the %d-byte initrd below 4 GiB", len(rd))
		}
	}
	cmdRange, err := mem.AddPhysSegment(append([]byte(cmdline), 0), ukexec.RangeFromInterval(1<<20, 1<<32))
	if err != nil {
		return info, fmt.Errorf("kexec: no room for the command line: %w", err)
	}
	zp, err := zeroPage(h, e820, uint64(cmdRange.Start), uint64(initrdRange.Start), uint64(initrdRange.Size), virtual != 0)
	if err != nil {
		return info, err
	}
	zpRange, err := mem.AddPhysSegment(zp, ukexec.RangeFromInterval(1<<20, 1<<32))
	if err != nil {
		return info, fmt.Errorf("kexec: no room for the zero page: %w", err)
	}
	stub := purgatory(uint64(zpRange.Start), phys+k.entry)
	stubRange, err := mem.AddPhysSegment(stub, ukexec.RangeFromInterval(1<<20, 1<<32))
	if err != nil {
		return info, fmt.Errorf("kexec: no room for the purgatory: %w", err)
	}
	segs, err := ukexec.AlignAndMerge(mem.Segments)
	if err != nil {
		return info, fmt.Errorf("kexec: %w", err)
	}
	if err := rawKexecLoad(uint64(stubRange.Start), segs); err != nil {
		return info, callError(fmt.Sprintf("kexec_load(%s, %s, %d segments)", img.Kernel, orNone(img.Initrd), len(segs)), err)
	}
	return info, nil
}

// prepareFast reads, checks and extracts the kernel: all that does not need the running
// kernel's permission.
func prepareFast(img Image) (*bzHeader, *kernelImage, error) {
	if err := roomForFile("the kernel file", img.Kernel); err != nil {
		return nil, nil, fmt.Errorf("%s: %w", img.Kernel, err)
	}
	kb, err := os.ReadFile(img.Kernel)
	if err != nil {
		return nil, nil, &ImageError{Path: img.Kernel, Err: fmt.Errorf("kexec load: kernel: %w", err)}
	}
	h, err := parseBzImage(kb)
	if err != nil {
		if errors.Is(err, errUnsupported) {
			return nil, nil, err
		}
		return nil, nil, &ImageError{Path: img.Kernel, Err: err}
	}
	start := time.Now()
	k, err := h.extract()
	if err != nil {
		if errors.Is(err, errNoRoom) {
			return nil, nil, fmt.Errorf("%s: %w", img.Kernel, err)
		}
		if errors.Is(err, errUnsupported) {
			return nil, nil, err
		}
		return nil, nil, &ImageError{Path: img.Kernel, Err: err}
	}
	k.took = time.Since(start)
	h.payload = nil // the compressed kernel is not needed any more
	return h, k, nil
}

// rawKexecLoad is kexec_load(2) with the native architecture. u-root's Load wraps the errno in
// a message listing every segment; here the caller names the call.
func rawKexecLoad(entry uint64, segs ukexec.Segments) error {
	type kseg struct {
		buf, bufsz, mem, memsz uintptr
	}
	ks := make([]kseg, len(segs))
	for i, s := range segs {
		ks[i] = kseg{bufsz: uintptr(len(s.Buf)), mem: s.Phys.Start, memsz: uintptr(s.Phys.Size)}
		if len(s.Buf) > 0 {
			ks[i].buf = uintptr(unsafe.Pointer(&s.Buf[0]))
		}
	}
	var p uintptr
	if len(ks) > 0 {
		p = uintptr(unsafe.Pointer(&ks[0]))
	}
	_, _, errno := unix.Syscall6(unix.SYS_KEXEC_LOAD, uintptr(entry), uintptr(len(ks)), p, 0, 0, 0)
	runtime.KeepAlive(segs)
	runtime.KeepAlive(ks)
	if errno != 0 {
		return errno
	}
	return nil
}

// purgatory is the code the old kernel jumps to: the 64-bit boot protocol wants %rsi to point
// at the zero page, and relocate_kernel clears every register. u-root's purgatory must sit at
// a fixed 0x3000, resets VGA registers on the way and its loader logs through the standard
// logger; these three instructions are all the job needs:
//
//	48 be imm64   movabs $zeropage, %rsi
//	48 b8 imm64   movabs $startup_64, %rax
//	ff e0         jmp *%rax
func purgatory(zeroPage, entry uint64) []byte {
	b := make([]byte, 22)
	b[0], b[1] = 0x48, 0xbe
	binary.LittleEndian.PutUint64(b[2:], zeroPage)
	b[10], b[11] = 0x48, 0xb8
	binary.LittleEndian.PutUint64(b[12:], entry)
	b[20], b[21] = 0xff, 0xe0
	return b
}

// addHighSegment adds data as a segment at the highest page-aligned place of free RAM within
// [lo, hi), as QEMU and boot loaders place an initrd: at the top of memory. The bottom of
// memory is where the running kernel's page allocator took pages first (its modules' code,
// the programs it unpacked), and under QEMU's TCG copying over pages that held code is slow.
func addHighSegment(mem *ukexec.Memory, data []byte, lo, hi uint64) (ukexec.Range, bool) {
	size := alignUp(uint64(len(data)), 4096)
	var best ukexec.Range
	found := false
	for _, r := range mem.AvailableRAM() {
		start, end := max(uint64(r.Start), lo), min(uint64(r.Start)+uint64(r.Size), hi)
		if end < size || end-size < start {
			continue
		}
		at := (end - size) &^ 4095
		if at >= start && (!found || at > uint64(best.Start)) {
			best, found = ukexec.Range{Start: uintptr(at), Size: uint(size)}, true
		}
	}
	if found {
		mem.Segments.Insert(ukexec.NewSegment(data, best))
	}
	return best, found
}

// iomemPath lists the physical address space, the running kernel's image included ("Kernel
// code", "Kernel rodata", "Kernel data", "Kernel bss"; real addresses for root only).
var iomemPath = "/proc/iomem"

// runningKernel returns the first and last byte of the running kernel's image, from the
// "Kernel …" entries of /proc/iomem; false when there are none or they read as zero.
func runningKernel(path string) (lo, hi uint64, ok bool) {
	for _, r := range iomemKernel(path) {
		if !ok || r[0] < lo {
			lo = r[0]
		}
		hi = max(hi, r[1])
		ok = true
	}
	return lo, hi, ok
}

// iomemKernel returns the "Kernel …" entries of /proc/iomem by name, each as its first and
// last byte; entries that read as zero (unprivileged readers see zeros) are left out.
func iomemKernel(path string) map[string][2]uint64 {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	out := map[string][2]uint64{}
	for _, line := range strings.Split(string(b), "\n") {
		span, name, found := strings.Cut(line, " : ")
		if !found || !strings.HasPrefix(name, "Kernel ") {
			continue
		}
		a, z, found := strings.Cut(strings.TrimSpace(span), "-")
		start, err1 := strconv.ParseUint(a, 16, 64)
		end, err2 := strconv.ParseUint(z, 16, 64)
		if found && err1 == nil && err2 == nil && end > start {
			out[name] = [2]uint64{start, end}
		}
	}
	return out
}

// randomPhysSlot picks an aligned start at or above min where size bytes of free RAM follow.
func randomPhysSlot(free ukexec.Ranges, size, align, min uint64) (uint64, bool) {
	type span struct{ first, n uint64 }
	var spans []span
	var total uint64
	for _, r := range free {
		lo := alignUp(max(uint64(r.Start), min), align)
		hi := uint64(r.Start) + uint64(r.Size)
		if lo+size > hi {
			continue
		}
		n := (hi-lo-size)/align + 1
		spans = append(spans, span{lo, n})
		total += n
	}
	if total == 0 {
		return 0, false
	}
	pick, err := rand.Int(rand.Reader, new(big.Int).SetUint64(total))
	if err != nil {
		return 0, false
	}
	i := pick.Uint64()
	for _, s := range spans {
		if i < s.n {
			return s.first + i*align, true
		}
		i -= s.n
	}
	return 0, false
}

func alignUp(v, a uint64) uint64 { return (v + a - 1) &^ (a - 1) }

// e820Entry is one entry of the zero page's memory map.
type e820Entry struct {
	addr, size uint64
	typ        uint32
}

// e820Types are /sys/firmware/memmap's type names and their E820 numbers.
var e820Types = map[string]uint32{
	"System RAM": 1, "Reserved": 2, "reserved": 2, "ACPI Tables": 3, "ACPI Non-volatile Storage": 4,
	"Unusable memory": 5, "Persistent Memory (legacy)": 7, "Persistent Memory": 12, "Soft Reserved": 0xefffffff,
}

// memmapDir is the firmware's memory map as the kernel kept it from boot (what kexec-tools
// passes on too); a variable for tests.
var memmapDir = "/sys/firmware/memmap"

// firmwareMemoryMap reads the firmware's map once: as E820 entries for the next kernel, and as
// u-root's map of free RAM for placing the segments.
func firmwareMemoryMap() (ukexec.MemoryMap, []e820Entry, error) {
	dirs, err := os.ReadDir(memmapDir)
	if err != nil {
		return nil, nil, fmt.Errorf("kexec: the firmware memory map: %w", err)
	}
	var mm ukexec.MemoryMap
	var e820 []e820Entry
	for _, d := range dirs {
		read := func(f string) string {
			b, _ := os.ReadFile(filepath.Join(memmapDir, d.Name(), f))
			return strings.TrimSpace(string(b))
		}
		start, err1 := strconv.ParseUint(read("start"), 0, 64)
		end, err2 := strconv.ParseUint(read("end"), 0, 64)
		typ, known := e820Types[read("type")]
		if err1 != nil || err2 != nil || end < start {
			return nil, nil, fmt.Errorf("kexec: %s/%s: unreadable entry", memmapDir, d.Name())
		}
		if !known {
			typ = 2
		}
		e820 = append(e820, e820Entry{addr: start, size: end - start + 1, typ: typ})
		t := ukexec.RangeReserved
		if typ == 1 {
			t = ukexec.RangeRAM
		}
		mm.Insert(ukexec.TypedRange{Range: ukexec.RangeFromInclusiveInterval(uintptr(start), uintptr(end)), Type: t})
	}
	if len(e820) == 0 {
		return nil, nil, fmt.Errorf("kexec: %s is empty", memmapDir)
	}
	if len(e820) > 128 {
		// The rest would go in a SETUP_E820_EXT setup_data entry; not written here.
		return nil, nil, fmt.Errorf("kexec: %d memory map entries, the zero page holds 128: %w", len(e820), errUnsupported)
	}
	return mm, e820, nil
}

// bootParamsPath is the running kernel's zero page; a variable for tests.
var bootParamsPath = "/sys/kernel/boot_params/data"

// zeroPage builds the next kernel's struct boot_params: its own setup header, the firmware's
// memory map, and from the running kernel only what describes the machine (screen, ACPI RSDP
// — from the EFI system table after a UEFI boot —, EDD, EDID, secure boot state). Not inherited: the setup_data chain (its pointers name memory
// this kernel has reused) and efi_info (the next kernel would need the EFI runtime map as well;
// it boots without EFI runtime services, finding ACPI through acpi_rsdp_addr). This is
// written by hand: u-root's LinuxParams has no acpi_rsdp_addr, efi_info or ext_* fields and
// marks its own E820 offsets as wrong.
func zeroPage(h *bzHeader, e820 []e820Entry, cmdline, initrd, initrdSize uint64, kaslr bool) ([]byte, error) {
	zp := make([]byte, 4096)
	if running, err := os.ReadFile(bootParamsPath); err == nil && len(running) >= 4096 {
		for _, r := range [][2]int{
			{0x000, 0x040}, // screen_info
			{0x070, 0x078}, // acpi_rsdp_addr
			{0x140, 0x1c0}, // edid_info
			{0x1e9, 0x1eb}, // eddbuf_entries, edd_mbr_sig_buf_entries
			{0x1ec, 0x1ed}, // secure_boot
			{0x290, 0x2d0}, // edd_mbr_sig_buffer
			{0xd00, 0xeec}, // eddbuf
		} {
			copy(zp[r[0]:r[1]], running[r[0]:r[1]])
		}
	}
	if binary.LittleEndian.Uint64(zp[0x070:]) == 0 {
		// A UEFI boot leaves it zero here: the kernel found ACPI through the EFI system
		// table, which the next kernel will not have. Without it, no ACPI at all (no power
		// button, no MADT). kexec-tools reads the same file.
		binary.LittleEndian.PutUint64(zp[0x070:], efiRSDP())
	}
	copy(zp[hdrSetupSects:], h.setup)
	zp[0x210] = 0xd0 // type_of_loader: kexec
	lf := zp[hdrLoadflags]
	lf &^= 0x80 | 0x02 // CAN_USE_HEAP (real-mode only), KASLR_FLAG (set below if true)
	if kaslr {
		// The kernel then also randomizes its memory regions, as after its decompressor.
		lf |= 0x02
	}
	zp[hdrLoadflags] = lf
	binary.LittleEndian.PutUint32(zp[0x228:], uint32(cmdline)) // cmd_line_ptr
	binary.LittleEndian.PutUint32(zp[0x0c8:], uint32(cmdline>>32))
	binary.LittleEndian.PutUint32(zp[0x218:], uint32(initrd)) // ramdisk_image
	binary.LittleEndian.PutUint32(zp[0x0c0:], uint32(initrd>>32))
	binary.LittleEndian.PutUint32(zp[0x21c:], uint32(initrdSize)) // ramdisk_size
	binary.LittleEndian.PutUint32(zp[0x0c4:], uint32(initrdSize>>32))
	binary.LittleEndian.PutUint64(zp[0x250:], 0) // setup_data
	zp[0x1e8] = byte(len(e820))
	var altMemK uint64
	for i, e := range e820 {
		at := 0x2d0 + 20*i
		binary.LittleEndian.PutUint64(zp[at:], e.addr)
		binary.LittleEndian.PutUint64(zp[at+8:], e.size)
		binary.LittleEndian.PutUint32(zp[at+16:], e.typ)
		if e.typ == 1 && e.addr <= 1<<20 && e.addr+e.size > 1<<20 {
			altMemK = (e.addr + e.size - 1<<20) >> 10
		}
	}
	binary.LittleEndian.PutUint32(zp[0x1e0:], uint32(min(altMemK, 0xffffffff))) // alt_mem_k
	zp[0x1ef] = 0                                                               // sentinel: we cleared what we did not set
	return zp, nil
}

// efiSystabPath lists the EFI configuration tables the firmware gave; a variable for tests.
var efiSystabPath = "/sys/firmware/efi/systab"

// efiRSDP is the ACPI RSDP's address from the EFI system table (ACPI 2.0's, else 1.0's), or 0.
func efiRSDP() uint64 {
	b, err := os.ReadFile(efiSystabPath)
	if err != nil {
		return 0
	}
	var acpi1, acpi2 uint64
	for _, l := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(l), "=")
		if !ok {
			continue
		}
		n, err := strconv.ParseUint(v, 0, 64)
		if err != nil {
			continue
		}
		switch k {
		case "ACPI20":
			acpi2 = n
		case "ACPI":
			acpi1 = n
		}
	}
	if acpi2 != 0 {
		return acpi2
	}
	return acpi1
}

// cmdlineFlags are what the fast method reads of the next kernel's command line.
type cmdlineFlags struct{ nokaslr bool }

// cmdlineFlagsOf finds the parameters that change how the kernel is placed.
func cmdlineFlagsOf(cmdline string) cmdlineFlags {
	var f cmdlineFlags
	for _, p := range strings.Fields(cmdline) {
		if p == "nokaslr" {
			f.nokaslr = true
		}
	}
	return f
}
