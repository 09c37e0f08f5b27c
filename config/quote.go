package config

import (
	"fmt"
	"strconv"
	"unicode/utf8"
)

// MaxQuote is how much of a value an error quotes. A config is read by PID 1 and its errors
// go to the serial console: a 50 MB hostname must not become a 50 MB error line.
const MaxQuote = 100

// quote is %q of s, cut to its first MaxQuote bytes (on a rune boundary) with its length
// when longer: "aaaa…" (52428800 bytes).
func quote(s string) string {
	if len(s) <= MaxQuote {
		return strconv.Quote(s)
	}
	cut := MaxQuote
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return fmt.Sprintf("%s… (%d bytes)", strconv.Quote(s[:cut]), len(s))
}

// clip shortens a message that may embed a value (the decoder's, a key path) to a size that
// still reads on a console line.
func clip(s string) string {
	const max = 4 * MaxQuote
	if len(s) <= max {
		return s
	}
	cut := max
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return fmt.Sprintf("%s… (%d bytes)", s[:cut], len(s))
}
