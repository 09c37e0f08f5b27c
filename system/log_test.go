package system

import (
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
)

// PID 1 logs before /dev/kmsg exists and hands its logger to goroutines; SetKmsg must reach
// every logger derived from the handler, while they log, without a data race (run with -race).
func TestConsoleHandlerSetKmsgReachesDerivedLoggers(t *testing.T) {
	h := NewConsoleHandler(io.Discard, nil, slog.LevelInfo)
	h.w.consoleLevel = func() int { return 0 } // the record's own level, whatever this host's console
	derived := slog.New(h).With("service", "a")
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 100 {
				derived.Warn("before and while kmsg is set")
			}
		}()
	}
	var kmsg syncBuffer
	h.SetKmsg(&kmsg)
	wg.Wait()
	var after syncBuffer // only what is logged from here on
	h.SetKmsg(&after)
	derived.Error("after", "long", strings.Repeat("x", 2000))
	got := after.String()
	if !strings.HasPrefix(got, "<3>baton: ERROR after service=a long=xxx") {
		t.Errorf("derived logger's line not in kmsg: %q", got)
	}
	if len(got) > 992 || !strings.HasSuffix(got, "…\n") {
		t.Errorf("kmsg line of %d bytes, want it cut below the kernel's 992-byte limit", len(got))
	}
}

// Control characters in a message or a value (a service's name for a file, a peer's words)
// reach the console escaped.
func TestConsoleHandlerEscapesControlCharacters(t *testing.T) {
	var out strings.Builder
	log := slog.New(NewConsoleHandler(&out, nil, slog.LevelInfo))
	log.Info("bad\x1b[2Jmessage", "status", "\x1b]0;owned\x07")
	if strings.ContainsAny(out.String(), "\x1b\x07") || !strings.Contains(out.String(), `bad\x1b[2Jmessage status="\x1b]0;owned\a"`) {
		t.Errorf("console line %q", out.String())
	}
}

// Under quiet (console_loglevel 4) the kernel echoes /dev/kmsg records of level 0-3 to the
// console, where baton printed the line already; without quiet (7), levels 0-6. Each line
// must reach the console once: the kmsg record goes at the console's level.
func TestConsoleHandlerKmsgNotEchoedToConsole(t *testing.T) {
	for _, tc := range []struct {
		consoleLevel int
		want         string // the kmsg record's prefix for an error
	}{
		{4, "<4>baton: ERROR"}, // quiet
		{7, "<7>baton: ERROR"}, // default
		{8, "<3>baton: ERROR"}, // ignore_loglevel: everything is echoed whatever baton does
		{0, "<3>baton: ERROR"}, // unknown
	} {
		var out, kmsg strings.Builder
		h := NewConsoleHandler(&out, &kmsg, slog.LevelInfo)
		h.w.consoleLevel = func() int { return tc.consoleLevel }
		slog.New(h).Error("boom")
		if !strings.HasPrefix(kmsg.String(), tc.want) {
			t.Errorf("console_loglevel %d: kmsg got %q, want prefix %q", tc.consoleLevel, kmsg.String(), tc.want)
		}
		if strings.Count(out.String(), "boom") != 1 {
			t.Errorf("console_loglevel %d: console got %q", tc.consoleLevel, out.String())
		}
	}
}
