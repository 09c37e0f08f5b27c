package system

import (
	"fmt"
	"log/slog"
	"path/filepath"
	"runtime"
	"strings"
)

// Recover turns a panic in a goroutine into a log line: a panic must never take PID 1, and
// with it the kernel, down. Call it deferred, directly: defer Recover(log, "what").
func Recover(log *slog.Logger, what string) {
	if p := recover(); p != nil {
		LogPanic(log, what, p)
	}
}

// Contain runs one round of an ongoing duty (a delivery, a poll, a signal) and recovers a
// panic in it, so that the loop calling it goes on with the next round instead of ending: a
// reaper that stopped reaping would hang every later wait for a child.
func Contain(log *slog.Logger, what string, round func()) {
	defer Recover(log, what)
	round()
}

// LogPanic reports a recovered panic with where it happened, at error level and to the
// kernel log, so it shows on the console and in dmesg of a machine nobody is logged in to.
func LogPanic(log *slog.Logger, what string, p any) {
	log.Error("recovered from panic", "in", what, "panic", fmt.Sprint(p), "stack", panicStack(), KmsgKey, true)
}

// panicStack lists the calls that led to the panic, innermost first, as "pkg.function
// file:line" separated by " < ". It leaves out the runtime's frames (the panic machinery,
// runtime errors) and those of the recovery, so the culprit comes first and survives the
// kernel log's line limit (about 1 KB), where debug.Stack()'s multi-line frames would not.
func panicStack() string {
	pcs := make([]uintptr, 32)
	frames := runtime.CallersFrames(pcs[:runtime.Callers(1, pcs)])
	var out []string
	inPanic := false // past runtime.gopanic: the frames from here led to the panic
	for {
		f, more := frames.Next()
		if f.Function == "runtime.gopanic" {
			inPanic = true
		} else if inPanic && !strings.HasPrefix(f.Function, "runtime.") {
			fn := f.Function[strings.LastIndex(f.Function, "/")+1:] // the import path is noise
			out = append(out, fmt.Sprintf("%s %s:%d", fn, filepath.Base(f.File), f.Line))
		}
		if !more {
			break
		}
	}
	return strings.Join(out, " < ")
}
