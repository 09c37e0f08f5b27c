package system

import (
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// BackgroundNice is the nice value of boot work nothing waits for first (module loading,
// mounting /boot, the remote API's TLS setup): the services' start gets the CPU before it,
// which matters on a machine with one CPU.
const BackgroundNice = 10

// ReachNice is the nice value of the boot work the services are reached through (the network
// card's bus and driver loading, their probe included): ahead of the services' own start, so
// that on a machine with one CPU the network is up before the services are ready and clients'
// connections wait in the held sockets' backlog, not in their own SYN retries.
const ReachNice = -10

// SetThreadPriority runs the calling goroutine, from now to its end, on a thread of its own at
// nice n. It must be called at the top of a goroutine that ends: the thread is never handed
// back (Go ends a thread whose goroutine exits locked), so no other goroutine, and no process
// forked from it, inherits the priority. Below the current nice value (a higher priority)
// needs CAP_SYS_NICE; without it the call fails and the thread keeps the caller's.
func SetThreadPriority(n int) error {
	runtime.LockOSThread()
	return unix.Setpriority(unix.PRIO_PROCESS, unix.Gettid(), n)
}

// cpuIdle reads the machine's CPU time so far from /proc/stat's first line: all of it, and
// the idle part (idle and iowait), in clock ticks.
func cpuIdle(stat string) (total, idle uint64, ok bool) {
	b, err := os.ReadFile(stat)
	if err != nil {
		return 0, 0, false
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 6 || f[0] != "cpu" {
		return 0, 0, false
	}
	for i, s := range f[1:] {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return 0, 0, false
		}
		if i >= 8 { // guest and guest_nice are in user and nice already
			break
		}
		total += n
		if i == 3 || i == 4 {
			idle += n
		}
	}
	return total, idle, true
}

// WaitForIdleCPU returns once the CPUs were idle at least half of a window (/proc/stat, read
// every window), or after max, and says how long it waited. Boot work that can come later
// (the drivers nothing waiting needs) waits for it: on a machine with one CPU, a driver's
// probe in the kernel is not preempted, whatever its nice value.
func WaitForIdleCPU(window, max time.Duration) time.Duration {
	return waitForIdleCPU("/proc/stat", window, max)
}

func waitForIdleCPU(stat string, window, max time.Duration) time.Duration {
	start := time.Now()
	t0, i0, ok := cpuIdle(stat)
	if !ok {
		return 0
	}
	for time.Since(start) < max {
		time.Sleep(window)
		t1, i1, ok := cpuIdle(stat)
		if !ok {
			break
		}
		// Differences as signed numbers: iowait, counted in both sums, may go down.
		total, idle := int64(t1-t0), int64(i1-i0)
		if total > 0 && idle > 0 && 2*idle >= total {
			break
		}
		t0, i0 = t1, i1
	}
	return time.Since(start)
}
