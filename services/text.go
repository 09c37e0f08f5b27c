package services

import (
	"fmt"
	"strings"
	"unicode"
)

// escapeControls shows control characters as Go escapes (\x1b, \u009b): a service's output
// or STATUS= must not move the cursor, clear the screen or retitle the terminal of whoever
// reads the console or `initctl status`. Tabs stay.
func escapeControls(s string) string {
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

func isControl(r rune) bool {
	return r != '\t' && (unicode.IsControl(r) || r == unicode.ReplacementChar)
}

// quoteShort quotes at most 100 bytes of a value a stranger may have sent, with its length.
func quoteShort(v string) string {
	const max = 100
	if len(v) <= max {
		return fmt.Sprintf("%q", v)
	}
	return fmt.Sprintf("%q… (%d bytes)", v[:max], len(v))
}
