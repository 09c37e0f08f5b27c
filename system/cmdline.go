package system

import (
	"os"
	"strings"
)

// Cmdline is the kernel command line, split the way the kernel splits it: on spaces outside
// double quotes, with the quotes removed.
type Cmdline struct {
	Raw    string
	params []string
}

// ReadCmdline reads /proc/cmdline.
func ReadCmdline() (Cmdline, error) {
	b, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		return Cmdline{}, err
	}
	return ParseCmdline(string(b)), nil
}

// ParseCmdline splits s into parameters.
func ParseCmdline(s string) Cmdline {
	s = strings.TrimSpace(s)
	c := Cmdline{Raw: s}
	var cur strings.Builder
	inQuote, have := false, false
	for _, r := range s {
		switch {
		case r == '"':
			inQuote = !inQuote
			have = true
		case (r == ' ' || r == '\t' || r == '\n') && !inQuote:
			if have {
				c.params = append(c.params, cur.String())
				cur.Reset()
				have = false
			}
		default:
			cur.WriteRune(r)
			have = true
		}
	}
	if have {
		c.params = append(c.params, cur.String())
	}
	return c
}

// Get returns the value of the last key=value parameter named key (the kernel's rule: the
// last one wins), and whether it was present. A bare "key" has the value "".
func (c Cmdline) Get(key string) (string, bool) {
	val, found := "", false
	for _, p := range c.params {
		k, v, _ := strings.Cut(p, "=")
		if k == key {
			val, found = v, true
		}
	}
	return val, found
}

// Params returns the parameters in order.
func (c Cmdline) Params() []string { return append([]string(nil), c.params...) }
