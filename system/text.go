package system

import (
	"fmt"
	"strings"
	"unicode"
)

// EscapeControls shows control characters as Go escapes (\x1b, \u009b), tabs excepted: text
// from a service (STATUS=, an error naming its file) must not clear the screen or retitle the
// terminal of whoever reads the console or initctl's output.
func EscapeControls(s string) string {
	if strings.IndexFunc(s, isControl) < 0 {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		switch {
		case !isControl(r):
			b.WriteRune(r)
		case r < 0x100:
			fmt.Fprintf(&b, `\x%02x`, r)
		default:
			fmt.Fprintf(&b, `\u%04x`, r)
		}
	}
	return b.String()
}

func isControl(r rune) bool { return r != '\t' && unicode.IsControl(r) }
