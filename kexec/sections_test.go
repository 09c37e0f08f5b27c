package kexec

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"reflect"
	"testing"
)

// sectionTail builds a payload tail holding three section headers (null, .shstrtab, .bss)
// followed by the string table, as vmlinux.bin keeps them after its segments; mutate changes
// the headers before they are written.
func sectionTail(tailAt uint64, mutate func(eh *elf.Header64, shdrs []elf.Section64)) (elf.Header64, []byte) {
	strtab := []byte("\x00.shstrtab\x00.bss\x00")
	const base = 0x1000000
	shdrs := []elf.Section64{
		{},
		{Name: 1, Type: uint32(elf.SHT_STRTAB), Off: tailAt + 3*64, Size: uint64(len(strtab))},
		{Name: 11, Type: uint32(elf.SHT_NOBITS), Flags: uint64(elf.SHF_ALLOC), Addr: startKernelMap + base + 0x3000, Size: 0x5000},
	}
	eh := elf.Header64{Shoff: tailAt, Shnum: 3, Shentsize: 64, Shstrndx: 1}
	if mutate != nil {
		mutate(&eh, shdrs)
	}
	var b bytes.Buffer
	_ = binary.Write(&b, binary.LittleEndian, shdrs)
	b.Write(strtab)
	return eh, b.Bytes()
}

// The section headers come from the kernel file: sizes and offsets that would wrap a bound
// check are refused (the span is copied), never a panic.
func TestClearedSectionsHostileHeaders(t *testing.T) {
	const tailAt, base, size = 0x10000, 0x1000000, 0x10000
	eh, tail := sectionTail(tailAt, nil)
	if got, want := clearedSections(eh, tail, tailAt, base, size), []span{{0x3000, 0x8000}}; !reflect.DeepEqual(got, want) {
		t.Fatalf("valid headers: %+v, want %+v", got, want)
	}
	for name, mutate := range map[string]func(*elf.Header64, []elf.Section64){
		"strtab size wraps":      func(_ *elf.Header64, s []elf.Section64) { s[1].Size = ^uint64(0) },
		"strtab offset wraps":    func(_ *elf.Header64, s []elf.Section64) { s[1].Off = ^uint64(0) - 4 },
		"headers offset wraps":   func(eh *elf.Header64, _ []elf.Section64) { eh.Shoff = ^uint64(0) - 64 },
		"bss size wraps":         func(_ *elf.Header64, s []elf.Section64) { s[2].Size = ^uint64(0) - 0x1000 },
		"bss address wraps":      func(_ *elf.Header64, s []elf.Section64) { s[2].Addr = ^uint64(0) - 0x100 },
		"bss beyond the image":   func(_ *elf.Header64, s []elf.Section64) { s[2].Addr = startKernelMap + base + size },
		"bss ends past image":    func(_ *elf.Header64, s []elf.Section64) { s[2].Size = size },
		"name beyond the strtab": func(_ *elf.Header64, s []elf.Section64) { s[2].Name = 1 << 31 },
		"too many headers":       func(eh *elf.Header64, _ []elf.Section64) { eh.Shnum = 0xffff },
	} {
		t.Run(name, func(t *testing.T) {
			eh, tail := sectionTail(tailAt, mutate)
			if got := clearedSections(eh, tail, tailAt, base, size); len(got) != 0 {
				t.Fatalf("cleared %+v", got)
			}
		})
	}
}
