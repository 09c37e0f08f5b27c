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
