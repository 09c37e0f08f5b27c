package system

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// ConsoleHandler is a slog.Handler for a serial console and /dev/kmsg: one short line per
// record, stamped with seconds since boot like the kernel's own lines, so a boot log reads
// top to bottom with the kernel's.
type ConsoleHandler struct {
	w     *consoleWriters // shared with the handlers WithAttrs derives, so SetKmsg reaches them
	level slog.Leveler
	attrs string
}

type consoleWriters struct {
	mu   sync.Mutex
	out  io.Writer
	kmsg io.Writer // nil until there is a /dev/kmsg
	// consoleLevel is the kernel's console_loglevel: records of a lower level written to
	// /dev/kmsg are printed on the console by the kernel as well.
	consoleLevel func() int
}

// NewConsoleHandler writes to out and, when kmsg is not nil, to the kernel log as well.
func NewConsoleHandler(out, kmsg io.Writer, level slog.Leveler) *ConsoleHandler {
	return &ConsoleHandler{w: &consoleWriters{out: out, kmsg: kmsg, consoleLevel: consoleLoglevel}, level: level}
}

// SetKmsg starts writing to the kernel log too, for this handler and every one derived from
// it. PID 1 starts logging before /dev exists; replacing its logger once it does would race
// with the goroutines already holding the old one.
func (h *ConsoleHandler) SetKmsg(kmsg io.Writer) {
	h.w.mu.Lock()
	defer h.w.mu.Unlock()
	h.w.kmsg = kmsg
}

// OpenKmsg opens /dev/kmsg for writing, or returns nil when it cannot (not PID 1, no devtmpfs).
func OpenKmsg() io.Writer {
	f, err := os.OpenFile("/dev/kmsg", os.O_WRONLY, 0)
	if err != nil {
		return nil
	}
	return f
}

func (h *ConsoleHandler) Enabled(_ context.Context, l slog.Level) bool {
	return l >= h.level.Level()
}

func (h *ConsoleHandler) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString(EscapeControls(r.Message))
	b.WriteString(h.attrs)
	r.Attrs(func(a slog.Attr) bool {
		if a.Key != KmsgKey {
			appendAttr(&b, a)
		}
		return true
	})
	line := b.String()
	level := ""
	if r.Level != slog.LevelInfo {
		level = r.Level.String() + " "
	}
	h.w.mu.Lock()
	defer h.w.mu.Unlock()
	fmt.Fprintf(h.w.out, "[%10.6f] baton: %s%s\n", Uptime().Seconds(), level, line)
	if h.w.kmsg != nil && (r.Level >= slog.LevelWarn || h.toKmsg(r)) {
		// Only warnings, errors and milestones go to the kernel log: the kernel rate-limits
		// writers of /dev/kmsg (10 lines per 5 s) and echoes them to the console as well.
		// A failed write must not stop console logging.
		prio := kmsgPriority(r.Level)
		// The kernel echoes a record whose level is below console_loglevel to the console,
		// where baton has just printed the line: every error twice under quiet (loglevel 4),
		// warnings and milestones too without it (7). The record is written at the console's
		// level instead, so the kernel keeps it for dmesg without echoing it; the line says
		// its severity itself. Not the other way round (skip our own line): the kernel
		// rate-limits /dev/kmsg writers and drops what exceeds it.
		if cl := h.w.consoleLevel(); cl > prio && cl <= 7 {
			prio = cl
		}
		_, _ = io.WriteString(h.w.kmsg, kmsgLine(fmt.Sprintf("<%d>baton: %s%s", prio, level, line)))
	}
	return nil
}

// kmsgMax is below the kernel's limit for one write to /dev/kmsg (992 bytes before 6.x, 1024
// after): a longer write is refused whole (EINVAL), so a long line (a panic's stack) is cut
// to fit instead of lost.
const kmsgMax = 960

func kmsgLine(s string) string {
	if len(s) > kmsgMax {
		s = s[:kmsgMax] + "…"
	}
	return s + "\n"
}

// KmsgKey marks a record for the kernel log whatever its level: log.Info("…", KmsgKey, true).
const KmsgKey = "kmsg"

func (h *ConsoleHandler) toKmsg(r slog.Record) bool {
	found := false
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == KmsgKey {
			found = true
			return false
		}
		return true
	})
	return found
}

func (h *ConsoleHandler) WithAttrs(as []slog.Attr) slog.Handler {
	var b strings.Builder
	b.WriteString(h.attrs)
	for _, a := range as {
		appendAttr(&b, a)
	}
	h2 := *h
	h2.attrs = b.String()
	return &h2
}

func (h *ConsoleHandler) WithGroup(string) slog.Handler { return h }

func appendAttr(b *strings.Builder, a slog.Attr) {
	v := a.Value.Resolve()
	s := v.String()
	if v.Kind() == slog.KindDuration {
		s = v.Duration().Round(10 * time.Microsecond).String()
	}
	// %q also escapes control characters: a value may come from a service or a peer.
	if s == "" || strings.ContainsAny(s, " \t\"=") || strings.IndexFunc(s, isControl) >= 0 {
		s = fmt.Sprintf("%q", s)
	}
	fmt.Fprintf(b, " %s=%s", a.Key, s)
}

// consoleLoglevel reads the first field of /proc/sys/kernel/printk (0 when unreadable: no
// record is demoted). Read per record: dmesg -n changes it at run time, and only warnings and
// milestones reach the kernel log.
func consoleLoglevel() int {
	b, err := os.ReadFile("/proc/sys/kernel/printk")
	if err != nil {
		return 0
	}
	var n int
	if _, err := fmt.Sscan(string(b), &n); err != nil {
		return 0
	}
	return n
}

func kmsgPriority(l slog.Level) int {
	switch {
	case l >= slog.LevelError:
		return 3
	case l >= slog.LevelWarn:
		return 4
	case l >= slog.LevelInfo:
		return 6
	default:
		return 7
	}
}

// Uptime is the time since the kernel started (CLOCK_BOOTTIME), the clock dmesg uses.
func Uptime() time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return 0
	}
	return time.Duration(ts.Nano())
}
