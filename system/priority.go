package system

import (
	"runtime"

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
