package config

import (
	"fmt"
	"path"
	"strconv"
	"strings"
)

// Log is the persistent journal: each service's lines also written under Dir, one directory
// per boot, so they survive a restart of baton and a reboot (initctl logs --boot -1).
type Log struct {
	// Dir is on a writable [[mount]] (e.g. "/var/log/baton"); "" keeps logs in memory only.
	// Lines are written once it exists.
	Dir string `toml:"dir"`
	// MaxSize caps each service's lines of one boot (default "1M"): its file is rotated at
	// half of it and one rotated file is kept.
	MaxSize string `toml:"max_size"`
	// Boots is how many boots' directories are kept (default 5).
	Boots int `toml:"boots"`
}

// Journal defaults.
const (
	DefaultLogMaxSize = 1 << 20
	DefaultLogBoots   = 5
)

// ParseSize reads a size: bytes, or a number with K, M or G (powers of 1024).
func ParseSize(s string) (int64, error) {
	mult := int64(1)
	num := s
	switch {
	case strings.HasSuffix(s, "K"):
		mult, num = 1<<10, s[:len(s)-1]
	case strings.HasSuffix(s, "M"):
		mult, num = 1<<20, s[:len(s)-1]
	case strings.HasSuffix(s, "G"):
		mult, num = 1<<30, s[:len(s)-1]
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n < 0 || n > (1<<50)/mult {
		return 0, fmt.Errorf("%s is not a size (e.g. \"512K\", \"1M\")", quote(s))
	}
	return n * mult, nil
}

// Size is MaxSize in bytes, the default when unset.
func (l Log) Size() int64 {
	if l.MaxSize == "" {
		return DefaultLogMaxSize
	}
	n, _ := ParseSize(l.MaxSize) // validated
	return n
}

// KeptBoots is Boots, the default when unset.
func (l Log) KeptBoots() int {
	if l.Boots == 0 {
		return DefaultLogBoots
	}
	return l.Boots
}

func (l Log) validate() []problem {
	var ps []problem
	if l.Dir != "" && !path.IsAbs(l.Dir) {
		ps = append(ps, problem{key: "log.dir", msg: fmt.Sprintf("%s must be an absolute path (e.g. \"/var/log/baton\")", quote(l.Dir))})
	}
	if l.MaxSize != "" {
		if n, err := ParseSize(l.MaxSize); err != nil {
			ps = append(ps, problem{key: "log.max_size", msg: err.Error()})
		} else if n < 8<<10 {
			ps = append(ps, problem{key: "log.max_size", msg: fmt.Sprintf("%s is under 8K: too small to hold a rotated file of lines", quote(l.MaxSize))})
		}
	}
	if l.Boots < 0 || l.Boots > 100 {
		ps = append(ps, problem{key: "log.boots", msg: fmt.Sprintf("%d is out of range (1-100)", l.Boots)})
	}
	if l.Dir == "" && (l.MaxSize != "" || l.Boots != 0) {
		ps = append(ps, problem{key: "log", msg: "max_size and boots need dir (where the journal is written)"})
	}
	return ps
}
