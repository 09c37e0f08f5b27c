package services

import "fmt"

// quoteShort quotes at most 100 bytes of a value a stranger may have sent, with its length.
func quoteShort(v string) string {
	const max = 100
	if len(v) <= max {
		return fmt.Sprintf("%q", v)
	}
	return fmt.Sprintf("%q… (%d bytes)", v[:max], len(v))
}
