package system

import (
	"runtime"

	"golang.org/x/sys/unix"
)

// BackgroundNice is the nice value of boot work nothing waits for first (module loading,
// mounting /boot, the remote API's TLS setup): the services' start gets the CPU before it,
// which matters on a machine with one CPU.
const BackgroundNice = 10

// LowerThreadPriority runs the calling goroutine, from now to its end, on a thread of its own
// at nice n. It must be called at the top of a goroutine that ends: the thread is never handed
// back (Go ends a thread whose goroutine exits locked), so no other goroutine, and no process
// forked from it, inherits the priority.
func LowerThreadPriority(n int) error {
	runtime.LockOSThread()
	return unix.Setpriority(unix.PRIO_PROCESS, unix.Gettid(), n)
}
