package system

import (
	"time"

	"golang.org/x/sys/unix"
)

// Go's monotonic readings are per process: a time.Time carried across execve means nothing
// to the next process image. What a re-exec writes down is the kernel's CLOCK_BOOTTIME
// (which, unlike CLOCK_MONOTONIC, also counts a suspend), in nanoseconds; 0 stands for the
// zero time.

// Boottime is CLOCK_BOOTTIME now, in nanoseconds.
func Boottime() int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return int64(Uptime())
	}
	return ts.Nano()
}

// ToBoottime is t on CLOCK_BOOTTIME (0 for the zero time). Past or future, it is placed by its
// distance from now, which uses t's monotonic reading when it has one.
func ToBoottime(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	ns := Boottime() + int64(time.Until(t))
	if ns == 0 {
		ns = 1 // 0 means "no time"
	}
	return ns
}

// FromBoottime is the time.Time, with this process's monotonic reading, of a CLOCK_BOOTTIME
// stamp ToBoottime wrote (the zero time for 0).
func FromBoottime(ns int64) time.Time {
	if ns == 0 {
		return time.Time{}
	}
	return time.Now().Add(time.Duration(ns - Boottime()))
}
