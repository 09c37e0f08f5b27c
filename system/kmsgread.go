package system

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// KernelLine is one record of the kernel's ring buffer, as dmesg shows it.
type KernelLine struct {
	Time     time.Time // wall clock, from the record's time since boot
	Priority int       // syslog level, 0 (emerg) to 7 (debug)
	Text     string
}

// ReadKmsg reads the kernel's ring buffer from /dev/kmsg: every record still in it, oldest
// first. Each read(2) returns one record; EAGAIN means none is left (the fd is non-blocking),
// EPIPE that records were overwritten while reading (the next read goes on after them).
func ReadKmsg() ([]KernelLine, error) {
	fd, err := unix.Open("/dev/kmsg", unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open /dev/kmsg: %w", err)
	}
	defer unix.Close(fd)
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts) // printk's clock runs with it
	boot := time.Now().Add(-time.Duration(ts.Nano()))
	var out []KernelLine
	buf := make([]byte, 8192) // a record is at most 1024 bytes of text plus its header
	for {
		n, err := unix.Read(fd, buf)
		switch {
		case errors.Is(err, unix.EAGAIN):
			return out, nil
		case errors.Is(err, unix.EPIPE), errors.Is(err, unix.EINTR):
			continue
		case err != nil:
			return out, fmt.Errorf("read /dev/kmsg: %w", err)
		}
		if l, ok := parseKmsg(string(buf[:n]), boot); ok {
			out = append(out, l)
		}
	}
}

// parseKmsg reads "PRI,SEQ,USEC,FLAGS[,…];TEXT\n[ KEY=VALUE\n…]" (Documentation/ABI/testing/dev-kmsg).
func parseKmsg(rec string, boot time.Time) (KernelLine, bool) {
	head, rest, ok := strings.Cut(rec, ";")
	if !ok {
		return KernelLine{}, false
	}
	f := strings.Split(head, ",")
	if len(f) < 3 {
		return KernelLine{}, false
	}
	pri, err1 := strconv.Atoi(f[0])
	usec, err2 := strconv.ParseInt(f[2], 10, 64)
	if err1 != nil || err2 != nil {
		return KernelLine{}, false
	}
	text, _, _ := strings.Cut(rest, "\n") // continuation lines (" KEY=VALUE") are device metadata
	return KernelLine{Time: boot.Add(time.Duration(usec) * time.Microsecond), Priority: pri & 7, Text: text}, true
}
