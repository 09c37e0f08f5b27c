package client

import (
	"os"
	"strconv"
	"syscall"
	"time"
)

// Store keeps c's fd in the supervisor's fd store under name, so it survives a crash or
// restart of the service and comes back through Files (FDSTORE=1). With poll false the fd is
// kept even after it hangs up (FDPOLL=0).
func Store(name string, c syscall.Conn, poll bool) error {
	msg := "FDSTORE=1\nFDNAME=" + name
	if !poll {
		msg += "\nFDPOLL=0"
	}
	return withFd(c, func(fd int) error { return notifyFds(msg, []int{fd}) })
}

// RemoveStored drops every fd stored under name (FDSTOREREMOVE=1).
func RemoveStored(name string) error {
	return Notify("FDSTOREREMOVE=1\nFDNAME=" + name)
}

// WatchdogInterval is how often the supervisor expects Watchdog, or 0 when it does not.
func WatchdogInterval() time.Duration {
	us, err := strconv.ParseInt(os.Getenv("WATCHDOG_USEC"), 10, 64)
	if err != nil || us <= 0 {
		return 0
	}
	if pid := os.Getenv("WATCHDOG_PID"); pid != "" && pid != strconv.Itoa(os.Getpid()) {
		return 0
	}
	return time.Duration(us) * time.Microsecond
}

// Watchdog tells the supervisor the service is alive (WATCHDOG=1); send it at least every
// WatchdogInterval()/2.
func Watchdog() error { return Notify("WATCHDOG=1") }
