package handoff

import (
	"strings"
	"testing"
)

// FuzzParseNotify: any datagram parses without a panic, into keys that are non-empty, contain
// no newline, and come from the datagram. make fuzz runs it; go test runs the seeds.
func FuzzParseNotify(f *testing.F) {
	for _, s := range []string{
		"READY=1", "READY=1\nSTATUS=serving\nMAINPID=42", "WATCHDOG_USEC=18446744073709552",
		"FDSTORE=1\nFDNAME=conn\n", "=\n==\n\n", "STATUS=\x1b[2J\x1b]0;x\x07", "BARRIER=1\x00READY=1",
		strings.Repeat("STATUS=x\n", 500),
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		for k := range ParseNotify(b) {
			if k == "" || strings.Contains(k, "\n") || !strings.Contains(string(b), k) {
				t.Errorf("key %q from %q", k, b)
			}
		}
	})
}
