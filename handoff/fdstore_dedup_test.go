package handoff

import (
	"io"
	"log/slog"
	"testing"

	"golang.org/x/sys/unix"
)

// A service that stores the same memfd after each restart sends a new fd for one file each
// time: it is kept once, and the store does not fill up with copies.
func TestFDStoreKeepsAFileOnce(t *testing.T) {
	s, err := NewFDStore(2, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	memo, _ := unix.MemfdCreate("memo", 0)
	defer unix.Close(memo)
	for range 4 {
		dup, _ := unix.Dup(memo)
		if err := s.Add("memo", []int{dup}, false); err != nil {
			t.Fatalf("the same memfd again: %v", err)
		}
	}
	if n := len(s.List()); n != 1 {
		t.Fatalf("%d entries for one memfd, want 1", n)
	}
	other, _ := unix.MemfdCreate("other", 0)
	if err := s.Add("other", []int{other}, false); err != nil || len(s.List()) != 2 {
		t.Fatalf("another file: %v, %d entries", err, len(s.List()))
	}
}
