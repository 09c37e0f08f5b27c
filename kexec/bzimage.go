package kexec

import (
	"bytes"
	"compress/bzip2"
	"crypto/rand"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/big"
	"sort"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
	"github.com/therootcompany/xz"
	"github.com/ulikunitz/xz/lzma"
	"golang.org/x/sys/unix"
)

// An x86 bzImage is a real-mode setup, a decompressor and a compressed payload. The payload is
// the kernel as an ELF file (vmlinux, stripped) followed by its relocation table, with the
// decompressed size appended as 4 little-endian bytes (arch/x86/boot/compressed/Makefile's
// size_append). The fast method does at load time what the decompressor does at boot:
// decompress, lay the ELF segments out, apply the relocations for a randomized virtual base.

// Offsets in the zero page (struct boot_params) and in the setup header it embeds; see
// Documentation/arch/x86/boot.rst and zero-page.rst.
const (
	hdrSetupSects    = 0x1f1
	hdrJump          = 0x200 // a short jmp: 0x202 + its displacement byte is the header's end
	hdrMagic         = 0x202 // "HdrS"
	hdrVersion       = 0x206
	hdrLoadflags     = 0x211
	hdrKernelAlign   = 0x230
	hdrCmdlineSize   = 0x238
	hdrRelocatable   = 0x234
	hdrXLoadflags    = 0x236
	hdrPayloadOffset = 0x248
	hdrPayloadLength = 0x24c
	hdrPrefAddress   = 0x258
	hdrInitSize      = 0x260

	xlfKernel64 = 1 << 0 // XLF_KERNEL_64: has the 64-bit entry point

	// __START_KERNEL_map: where x86_64 maps the kernel image virtually.
	startKernelMap = 0xffffffff80000000
	// KERNEL_IMAGE_SIZE with RANDOMIZE_BASE: the kernel image must end within 1 GiB of the map.
	kernelImageSize = 1 << 30
)

// ImageError is a kernel file that no method can boot (not a bzImage, truncated, a corrupt or
// unknown payload): it is refused before anything stops, and no other method is tried.
type ImageError struct {
	Path string
	Err  error
}

func (e *ImageError) Error() string {
	if errors.Is(e.Err, fs.ErrNotExist) || errors.Is(e.Err, fs.ErrPermission) {
		return e.Err.Error()
	}
	return fmt.Sprintf("%s: not a kernel that can be booted (%v): %v", e.Path, unix.ENOEXEC, e.Err)
}

func (e *ImageError) Unwrap() error { return e.Err }

// errUnsupported is a well-formed kernel the fast method cannot take (a compression without a
// decoder here, a 32-bit kernel): the file method may still load it.
var errUnsupported = errors.New("not supported by the fast method")

// bzHeader is what the fast method needs of a bzImage's setup header.
type bzHeader struct {
	setup       []byte // the setup header, 0x1f1 up to its end, copied into the zero page
	version     uint16
	kernelAlign uint64
	prefAddress uint64 // LOAD_PHYSICAL_ADDR: where the ELF is linked physically
	cmdlineSize int    // the longest command line the kernel takes, without its NUL
	initSize    uint64 // memory the kernel needs from its load address at boot
	payload     []byte // compressed, without the appended size
	rawSize     uint32 // the payload's decompressed size (size_append)
	compression string
}

// parseBzImage checks the setup header and finds the payload. It reads only the header: the
// payload is decompressed later, streamed.
func parseBzImage(k []byte) (*bzHeader, error) {
	if len(k) < 0x400 {
		return nil, fmt.Errorf("too short for a bzImage (%d bytes)", len(k))
	}
	if string(k[hdrMagic:hdrMagic+4]) != "HdrS" {
		return nil, errors.New("not a bzImage: no \"HdrS\" magic in the setup header")
	}
	h := &bzHeader{version: binary.LittleEndian.Uint16(k[hdrVersion:])}
	if h.version < 0x20c {
		return nil, fmt.Errorf("boot protocol %d.%02d: the fast method needs 2.12 or later (64-bit entry, payload fields): %w",
			h.version>>8, h.version&0xff, errUnsupported)
	}
	if binary.LittleEndian.Uint16(k[hdrXLoadflags:])&xlfKernel64 == 0 {
		return nil, fmt.Errorf("a kernel without the 64-bit entry point: %w", errUnsupported)
	}
	if k[hdrRelocatable] == 0 {
		return nil, fmt.Errorf("a kernel that is not relocatable: %w", errUnsupported)
	}
	end := 0x202 + int(k[hdrJump+1])
	if end <= hdrInitSize+4 || end > 0x400 {
		return nil, fmt.Errorf("setup header length %#x out of range", end)
	}
	h.setup = k[hdrSetupSects:end]
	h.kernelAlign = uint64(binary.LittleEndian.Uint32(k[hdrKernelAlign:]))
	h.prefAddress = binary.LittleEndian.Uint64(k[hdrPrefAddress:])
	h.initSize = uint64(binary.LittleEndian.Uint32(k[hdrInitSize:]))
	h.cmdlineSize = int(min(binary.LittleEndian.Uint32(k[hdrCmdlineSize:]), 1<<16))
	if h.kernelAlign == 0 || h.kernelAlign&(h.kernelAlign-1) != 0 {
		return nil, fmt.Errorf("kernel_alignment %#x is not a power of two", h.kernelAlign)
	}
	if h.prefAddress >= kernelImageSize {
		// The kernel is linked at startKernelMap plus this, and must end within the 1 GiB
		// that follows: a larger value is a corrupt header (and would wrap that sum).
		return nil, fmt.Errorf("pref_address %#x is beyond the kernel's 1 GiB image space", h.prefAddress)
	}
	setupSects := int(k[hdrSetupSects])
	if setupSects == 0 {
		setupSects = 4
	}
	off := (setupSects+1)*512 + int(binary.LittleEndian.Uint32(k[hdrPayloadOffset:]))
	n := int(binary.LittleEndian.Uint32(k[hdrPayloadLength:]))
	if n < 8 || off+n > len(k) {
		return nil, fmt.Errorf("truncated: the header puts the payload at %d+%d bytes, the file has %d", off, n, len(k))
	}
	p := k[off : off+n]
	h.rawSize = binary.LittleEndian.Uint32(p[n-4:])
	h.payload = p[:n-4]
	h.compression = compressionOf(p)
	if h.compression == "" {
		return nil, fmt.Errorf("unknown payload compression (first bytes % x)", p[:6])
	}
	return h, nil
}

// compressionOf names a payload's compression by its magic, as the kernel's Kconfig offers them.
func compressionOf(p []byte) string {
	for _, m := range []struct {
		name  string
		magic []byte
	}{
		{"gzip", []byte{0x1f, 0x8b}},
		{"xz", []byte{0xfd, '7', 'z', 'X', 'Z', 0}},
		{"zstd", []byte{0x28, 0xb5, 0x2f, 0xfd}},
		{"lz4", []byte{0x02, 0x21, 0x4c, 0x18}}, // the legacy frame of lz4 -l
		{"bzip2", []byte{'B', 'Z', 'h'}},
		{"lzma", []byte{0x5d, 0, 0}},
		{"lzo", []byte{0x89, 'L', 'Z', 'O'}},
	} {
		if bytes.HasPrefix(p, m.magic) {
			return m.name
		}
	}
	return ""
}

// decompressor streams the payload.
func (h *bzHeader) decompressor() (io.Reader, error) {
	return decoder(h.compression, bytes.NewReader(h.payload))
}

// decoder streams r, compressed as kind names it (the names of the kernel's payloads; the
// initramfs uses it too). XZ needs a decoder with the x86 BCJ filter, which the kernel's
// xz_wrap.sh always adds (ulikunitz/xz has no BCJ filters; therootcompany/xz is a port of the
// kernel's own xz-embedded).
func decoder(kind string, r io.Reader) (io.Reader, error) {
	switch kind {
	case "gzip":
		return gzip.NewReader(r)
	case "xz":
		return xz.NewReader(r, maxLZMADict)
	case "zstd":
		d, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true),
			zstd.WithDecoderMaxWindow(maxZstdWindow))
		if err != nil {
			return nil, err
		}
		return d.IOReadCloser(), nil
	case "lz4":
		return lz4.NewReader(r), nil
	case "bzip2":
		return bzip2.NewReader(r), nil
	case "lzma":
		d, err := lzma.ReaderConfig{DictCap: maxLZMADict}.NewReader(r)
		if err != nil {
			return nil, tooBig(err)
		}
		return d, nil
	}
	return nil, fmt.Errorf("%s payload: no decoder here: %w", kind, errUnsupported)
}

// kernelImage is the kernel laid out as the decompressor lays it out: each PT_LOAD segment at
// its physical address minus the link address.
type kernelImage struct {
	mem     []byte // the file-backed part; the rest of memSize is reserved, neither copied nor zeroed
	memSize uint64 // what the kernel needs at its load address (init_size, or more)
	entry   uint64 // offset of startup_64 in mem
	relocs  []byte // the relocation table (the tail of the payload)
	// cleared are the ranges of mem (offsets, page-aligned inward) the kernel zeroes itself
	// before it reads them: .bss and .brk (clear_bss in arch/x86/kernel/head64.c). They need
	// not be copied at the jump. In Debian's kernels they lie inside the file-backed part, as
	// zeros the bzImage's decompressor copies; nothing reads them before clear_bss.
	cleared []span
	took    time.Duration
}

// span is a byte range [off, end) of the kernel's image.
type span struct{ off, end uint64 }

// copied is the image minus cleared: the parts kexec must copy into place, in order.
func (img *kernelImage) copied() []span {
	var out []span
	at := uint64(0)
	for _, c := range img.cleared {
		if c.off > at {
			out = append(out, span{at, c.off})
		}
		at = max(at, c.end)
	}
	if end := uint64(len(img.mem)); end > at {
		out = append(out, span{at, end})
	}
	return out
}

// kernelCleared are the sections clear_bss zeroes, by name.
var kernelCleared = map[string]bool{".bss": true, ".brk": true}

// clearedSections finds kernelCleared in the ELF's section headers, which tail (the payload
// from offset tailAt on) holds: vmlinux.bin keeps them, after its segments. Ranges outside
// [0, size) or that do not hold a whole page are left out: what is not understood is copied.
// A payload without section headers gives none. The headers come from the payload, so every
// bound is checked without an addition that could wrap.
func clearedSections(eh elf.Header64, tail []byte, tailAt, base, size uint64) []span {
	const shdrSize = 64
	if eh.Shoff < tailAt || eh.Shnum == 0 || eh.Shentsize != shdrSize || eh.Shstrndx >= eh.Shnum {
		return nil
	}
	at, n := eh.Shoff-tailAt, uint64(len(tail))
	if at > n || uint64(eh.Shnum)*shdrSize > n-at {
		return nil
	}
	shdrs := make([]elf.Section64, eh.Shnum)
	if err := binary.Read(bytes.NewReader(tail[at:]), binary.LittleEndian, shdrs); err != nil {
		return nil
	}
	names := shdrs[eh.Shstrndx]
	if names.Off < tailAt || names.Off-tailAt > n || names.Size > n-(names.Off-tailAt) {
		return nil
	}
	strtab := tail[names.Off-tailAt : names.Off-tailAt+names.Size]
	var out []span
	for _, sh := range shdrs {
		if elf.SectionType(sh.Type) != elf.SHT_NOBITS || elf.SectionFlag(sh.Flags)&elf.SHF_ALLOC == 0 ||
			sh.Addr < startKernelMap+base || uint64(sh.Name) >= uint64(len(strtab)) {
			continue
		}
		rel := sh.Addr - startKernelMap - base // its offset in the image
		if rel >= size || sh.Size > size-rel {
			continue
		}
		name := strtab[sh.Name:]
		if i := bytes.IndexByte(name, 0); i >= 0 {
			name = name[:i]
		}
		if !kernelCleared[string(name)] {
			continue
		}
		off, end := alignUp(rel, 4096), (rel+sh.Size)&^4095
		if end > off {
			out = append(out, span{off, end})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].off < out[j].off })
	return out
}

// extract decompresses the payload, streaming it into the image's layout: the decompressed ELF
// is never held whole (66 MB for Debian's 6.1 kernel, against 512 MB in the demo guest).
func (h *bzHeader) extract() (*kernelImage, error) {
	dec, err := h.decompressor()
	if err != nil {
		return nil, err
	}
	if c, ok := dec.(io.Closer); ok {
		defer c.Close()
	}
	r := &countingReader{r: io.LimitReader(dec, int64(h.rawSize))}
	// The ELF and program headers come first.
	var eh elf.Header64
	if err := binary.Read(r, binary.LittleEndian, &eh); err != nil {
		return nil, payloadErr(h, "ELF header", err)
	}
	if string(eh.Ident[:4]) != elf.ELFMAG || elf.Class(eh.Ident[elf.EI_CLASS]) != elf.ELFCLASS64 ||
		elf.Machine(eh.Machine) != elf.EM_X86_64 {
		return nil, fmt.Errorf("the %s payload is not an x86-64 ELF kernel", h.compression)
	}
	if eh.Phoff < uint64(r.n) || eh.Phnum == 0 || eh.Phnum > 64 || eh.Phentsize != uint16(binary.Size(elf.Prog64{})) {
		return nil, fmt.Errorf("the payload's ELF program headers are malformed (%d at %#x)", eh.Phnum, eh.Phoff)
	}
	if err := r.skipTo(eh.Phoff); err != nil {
		return nil, payloadErr(h, "ELF program headers", err)
	}
	progs := make([]elf.Prog64, eh.Phnum)
	if err := binary.Read(r, binary.LittleEndian, progs); err != nil {
		return nil, payloadErr(h, "ELF program headers", err)
	}
	var loads []elf.Prog64
	for _, p := range progs {
		if elf.ProgType(p.Type) == elf.PT_LOAD {
			loads = append(loads, p)
		}
	}
	if len(loads) == 0 {
		return nil, errors.New("the payload's ELF has no loadable segment")
	}
	sort.Slice(loads, func(i, j int) bool { return loads[i].Off < loads[j].Off })
	base := h.prefAddress
	var fileEnd, memEnd uint64
	for _, p := range loads {
		if p.Paddr < base || p.Filesz > p.Memsz || p.Memsz > kernelImageSize || p.Paddr-base > kernelImageSize {
			return nil, fmt.Errorf("ELF segment at physical %#x (+%#x) is outside the kernel's image from %#x", p.Paddr, p.Memsz, base)
		}
		fileEnd = max(fileEnd, p.Paddr-base+p.Filesz)
		memEnd = max(memEnd, p.Paddr-base+p.Memsz)
	}
	if eh.Entry < base || eh.Entry-base >= fileEnd {
		return nil, fmt.Errorf("ELF entry %#x is outside the kernel's image", eh.Entry)
	}
	if err := roomFor("the kernel, laid out, with its decoder's window,", fileEnd+decoderMemory(h.compression, uint64(h.rawSize))); err != nil {
		return nil, err
	}
	img := &kernelImage{mem: make([]byte, fileEnd), memSize: max(memEnd, h.initSize), entry: eh.Entry - base}
	for _, p := range loads {
		if err := r.skipTo(p.Off); err != nil {
			return nil, payloadErr(h, "ELF segments", err)
		}
		at := p.Paddr - base
		if _, err := io.ReadFull(r, img.mem[at:at+p.Filesz]); err != nil {
			return nil, payloadErr(h, "ELF segments", err)
		}
	}
	// Whatever follows the last segment (section headers, then the relocations) is small.
	tailAt := uint64(r.n)
	if img.relocs, err = io.ReadAll(io.LimitReader(r, maxTail+1)); err != nil {
		return nil, payloadErr(h, "relocation table", err)
	}
	if len(img.relocs) > maxTail {
		return nil, fmt.Errorf("the %s payload has more than %d MiB after the kernel's segments: %w", h.compression, maxTail>>20, errNoRoom)
	}
	img.cleared = clearedSections(eh, img.relocs, tailAt, base, fileEnd)
	if r.n != int64(h.rawSize) {
		return nil, fmt.Errorf("truncated: the %s payload decompressed to %d bytes, its trailer says %d", h.compression, r.n, h.rawSize)
	}
	return img, nil
}

// tooBig marks a decoder's refusal of a dictionary or window above its cap as errNoRoom: the
// file method, where the kernel decompresses, may boot what the fast method will not hold.
func tooBig(err error) error {
	var dict *lzma.ErrDictSize
	if errors.As(err, &dict) || errors.Is(err, xz.ErrMemlimit) || errors.Is(err, zstd.ErrWindowSizeExceeded) {
		return fmt.Errorf("%v (the fast method's decoders hold %d MiB of LZMA dictionary, %d MiB of zstd window): %w",
			err, maxLZMADict>>20, maxZstdWindow>>20, errNoRoom)
	}
	return err
}

func payloadErr(h *bzHeader, what string, err error) error {
	if err := tooBig(err); errors.Is(err, errNoRoom) {
		return fmt.Errorf("the %s payload: %w", h.compression, err)
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("truncated: the %s payload ended inside the %s", h.compression, what)
	}
	return fmt.Errorf("the %s payload is corrupt (in the %s): %v", h.compression, what, err)
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

func (c *countingReader) skipTo(off uint64) error {
	if off < uint64(c.n) {
		return fmt.Errorf("ELF parts overlap or are out of order at offset %#x", off)
	}
	_, err := io.CopyN(io.Discard, c, int64(off)-c.n)
	return err
}

// relocate applies the kernel's relocation table for a kernel that will run delta bytes above
// its linked virtual address, as arch/x86/boot/compressed/misc.c's handle_relocations does.
// Read backwards from the end: 32-bit relocations until a zero, then inverse 32-bit ones
// until a zero, then 64-bit ones until a zero. Each entry is the (sign-extended) virtual
// address of a location to patch.
func (img *kernelImage) relocate(base, delta uint64) error {
	t := img.relocs
	entry := func(i int) (uint64, bool) {
		at := len(t) - 4*(i+1)
		if at < 0 {
			return 0, false
		}
		return uint64(int64(int32(binary.LittleEndian.Uint32(t[at:])))), true
	}
	where := func(v uint64, size uint64) ([]byte, error) {
		off := v - startKernelMap - base
		if v < startKernelMap+base || off+size > uint64(len(img.mem)) {
			return nil, fmt.Errorf("relocation at %#x is outside the kernel", v)
		}
		return img.mem[off : off+size], nil
	}
	i := 0
	for pass := 0; pass < 3; pass++ {
		for ; ; i++ {
			v, ok := entry(i)
			if !ok {
				return errors.New("the relocation table has no end (is this kernel built with CONFIG_RELOCATABLE?)")
			}
			if v == 0 {
				i++
				break
			}
			size := uint64(4)
			if pass == 2 {
				size = 8
			}
			b, err := where(v, size)
			if err != nil {
				return err
			}
			switch pass {
			case 0:
				binary.LittleEndian.PutUint32(b, binary.LittleEndian.Uint32(b)+uint32(delta))
			case 1:
				binary.LittleEndian.PutUint32(b, binary.LittleEndian.Uint32(b)-uint32(delta))
			case 2:
				binary.LittleEndian.PutUint64(b, binary.LittleEndian.Uint64(b)+delta)
			}
		}
	}
	return nil
}

// randomVirtualDelta picks a virtual offset as the decompressor's find_random_virt_addr does:
// an aligned slot such that the image still ends inside KERNEL_IMAGE_SIZE.
func randomVirtualDelta(base, size, align uint64) (uint64, error) {
	if base+size >= kernelImageSize {
		return 0, nil
	}
	slots := (kernelImageSize-base-size)/align + 1
	n, err := rand.Int(rand.Reader, new(big.Int).SetUint64(slots))
	if err != nil {
		return 0, err
	}
	return n.Uint64() * align, nil
}
