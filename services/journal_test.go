package services

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/baton-init/baton/config"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// A service's lines reach the journal of this boot, and a second supervisor (baton started
// again in the same kernel boot) appends to the same directory.
func TestJournalKeepsServiceLines(t *testing.T) {
	dir := t.TempDir()
	for run := 1; run <= 2; run++ {
		cfg := &config.Config{Log: config.Log{Dir: dir}, Service: []config.Service{
			{Name: "x", Exec: sh(fmt.Sprintf("echo run %d; echo err %d >&2; exec sleep 100", run, run)), Restart: config.RestartNever}}}
		cfg.Service[0].ApplyDefaults()
		sv, err := New(cfg, Options{Log: quiet, Reaper: reaper, RunDir: t.TempDir()})
		if err != nil {
			t.Fatal(err)
		}
		sv.StartAll()
		s := sv.Service("x")
		waitLog(t, s, fmt.Sprint("run ", run))
		waitLog(t, s, fmt.Sprint("err ", run))
		sv.StopAll()
		sv.Close() // flushes the journal
	}
	got, err := ReadJournal(dir, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	var texts []string
	for _, l := range got["x"] {
		texts = append(texts, l.Stream+":"+l.Text)
	}
	// stdout and stderr are read by two goroutines: within a run their order may differ.
	joined := strings.Join(texts, " ")
	for _, want := range []string{"stdout:run 1", "stderr:err 1", "stdout:run 2", "stderr:err 2"} {
		if !strings.Contains(joined, want) {
			t.Errorf("journal %q lacks %q", joined, want)
		}
	}
	if len(texts) != 4 || strings.Index(joined, "run 2") < strings.Index(joined, "err 1") {
		t.Errorf("journal %q: want the 4 lines, run 1's before run 2's", joined)
	}
	if boots, _ := journalBoots(dir); len(boots) != 1 {
		t.Errorf("%d boot directories; want 1 (same kernel boot)", len(boots))
	}
}

// Each service's file is rotated at half of max_size, one rotated file kept.
func TestJournalRotates(t *testing.T) {
	dir := t.TempDir()
	const maxSize = 8 << 10
	j := OpenJournal(dir, maxSize, 5, quiet)
	t0 := time.Now()
	for i := range 1000 { // ~70 KB of lines; the queue holds them all
		j.add("x", LogLine{Time: t0.Add(time.Duration(i)), Stream: "stdout", Text: fmt.Sprintf("line %04d", i)})
	}
	j.Close()
	boots, _ := journalBoots(dir)
	if len(boots) != 1 {
		t.Fatalf("boots %v", boots)
	}
	var total int64
	for _, f := range []string{"x.log", "x.log.1"} {
		st, err := os.Stat(filepath.Join(boots[0].dir, f))
		if err != nil {
			t.Fatal(err)
		}
		total += st.Size()
	}
	if total > maxSize+200 {
		t.Errorf("x's files hold %d bytes; want at most max_size %d (and a line)", total, maxSize)
	}
	got, _ := ReadJournal(dir, 0, []string{"x"})
	lines := got["x"]
	if len(lines) == 0 || lines[len(lines)-1].Text != "line 0999" {
		t.Fatalf("last line %v; want line 0999", lines[len(lines)-1:])
	}
	for i := 1; i < len(lines); i++ {
		if !lines[i].Time.After(lines[i-1].Time) {
			t.Fatalf("line %d (%s) not after %s: rotated files read out of order", i, lines[i].Text, lines[i-1].Text)
		}
	}
}

// A journal whose directory is not there yet (not mounted) holds what its queue can and
// never blocks the service's reader; the rest is counted and said in the file.
func TestJournalNeverBlocks(t *testing.T) {
	root := filepath.Join(t.TempDir(), "log")
	j := OpenJournal(root, 1<<20, 5, quiet)
	const n = journalQueue + 1000
	for i := range n {
		j.add("x", LogLine{Time: time.Now(), Stream: "stdout", Text: fmt.Sprint("line ", i)})
	}
	if err := os.Mkdir(root, 0o755); err != nil { // the mount appears
		t.Fatal(err)
	}
	j.Close()
	got, err := ReadJournal(root, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	lines := got["x"]
	if len(lines) != journalQueue+1 || !strings.Contains(lines[0].Text, "(1000 lines not written") {
		t.Errorf("%d lines, first %q; want the note of 1000 dropped, then the %d queued", len(lines), lines[0].Text, journalQueue)
	}
}

// Older boots are read with a negative offset and pruned beyond [log] boots.
func TestJournalBoots(t *testing.T) {
	dir := t.TempDir()
	for i, id := range []string{"aaaa", "bbbb", "cccc"} {
		d := filepath.Join(dir, "boots", fmt.Sprintf("%06d-%s", i+1, id))
		os.MkdirAll(d, 0o755)
		os.WriteFile(filepath.Join(d, "web.log"), []byte(fmt.Sprintf(`{"time":"2026-01-0%dT10:00:00Z","stream":"stdout","text":"boot %s"}`+"\n", i+1, id)), 0o644)
	}
	j := OpenJournal(dir, 1<<20, 3, quiet) // this boot makes a fourth: the oldest goes
	j.add("web", LogLine{Time: time.Now(), Stream: "stdout", Text: "this boot"})
	j.Close()
	for _, tc := range []struct {
		boot int
		want string
	}{{0, "this boot"}, {-1, "boot cccc"}, {-2, "boot bbbb"}} {
		got, err := ReadJournal(dir, tc.boot, []string{"web"})
		if err != nil || len(got["web"]) != 1 || got["web"][0].Text != tc.want {
			t.Errorf("boot %d: %v, %v; want %q", tc.boot, got, err, tc.want)
		}
	}
	if _, err := ReadJournal(dir, -3, nil); err == nil || !strings.Contains(err.Error(), "no journal for boot -3") {
		t.Errorf("boot -3 (pruned): %v; want an error naming it", err)
	}
}
