package kmod

import (
	"bytes"
	"debug/elf"
	"fmt"
	"path/filepath"
	"strings"
)

// Modinfo is what a .ko's .modinfo section says about it.
type Modinfo struct {
	Name    string
	Depends []string
	Aliases []string
	Pre     []string // softdep=pre: …
	Post    []string // softdep=… post: …
}

// ReadModinfo reads the .modinfo section of an uncompressed .ko file.
func ReadModinfo(file string) (Modinfo, error) {
	f, err := elf.Open(file)
	if err != nil {
		return Modinfo{}, fmt.Errorf("read module %s: %w (compressed modules are not supported)", file, err)
	}
	defer f.Close()
	s := f.Section(".modinfo")
	if s == nil {
		return Modinfo{}, fmt.Errorf("read module %s: no .modinfo section", file)
	}
	data, err := s.Data()
	if err != nil {
		return Modinfo{}, fmt.Errorf("read module %s: .modinfo: %w", file, err)
	}
	mi := ParseModinfo(data)
	if mi.Name == "" { // modules older than 5.x carry no name=; the file name is the module name
		mi.Name = Name(strings.TrimSuffix(filepath.Base(file), ".ko"))
	}
	return mi, nil
}

// ParseModinfo parses the NUL-separated key=value strings of a .modinfo section.
func ParseModinfo(data []byte) Modinfo {
	var mi Modinfo
	for _, kv := range bytes.Split(data, []byte{0}) {
		k, v, ok := strings.Cut(string(kv), "=")
		if !ok {
			continue
		}
		switch k {
		case "name":
			mi.Name = Name(v)
		case "depends":
			for _, d := range strings.Split(v, ",") {
				if d != "" {
					mi.Depends = append(mi.Depends, Name(d))
				}
			}
		case "alias":
			mi.Aliases = append(mi.Aliases, v)
		case "softdep": // "pre: a b post: c"
			var into *[]string
			for _, w := range strings.Fields(v) {
				switch w {
				case "pre:":
					into = &mi.Pre
				case "post:":
					into = &mi.Post
				default:
					if into != nil {
						*into = append(*into, Name(w))
					}
				}
			}
		}
	}
	return mi
}
