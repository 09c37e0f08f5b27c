package system

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// ResetIgnoredSignals sets every signal still ignored (SIG_IGN) back to its default action and
// returns those it reset. A disposition of SIG_IGN survives execve, so without this a service
// would inherit what was ignored when baton started: SIGHUP under nohup, SIGINT and SIGQUIT
// for a background job of a shell script, signal 32 or 33 from a parent using glibc's. Go
// already replaces most of these with its own handler, which execve resets; it keeps the
// inherited SIG_IGN of SIGHUP and SIGINT unless they are notified, and never touches the
// signals it leaves to the C library (32, 33). Call it after the signal.Notify calls: what it
// resets then ends baton's process if it arrives, as for any process with default actions.
func ResetIgnoredSignals() []int {
	var reset []int
	for sig := 1; sig <= 64; sig++ {
		if sig == int(unix.SIGKILL) || sig == int(unix.SIGSTOP) {
			continue
		}
		// The kernel's struct sigaction begins with the handler; 32 bytes hold it whole on
		// amd64 and arm64. Only the handler is read, and all zero is SIG_DFL with no flags.
		var old, dfl [4]uint64
		if _, _, e := unix.RawSyscall6(unix.SYS_RT_SIGACTION, uintptr(sig), 0, uintptr(unsafe.Pointer(&old)), 8, 0, 0); e != 0 {
			continue
		}
		if old[0] != 1 { // SIG_IGN
			continue
		}
		if _, _, e := unix.RawSyscall6(unix.SYS_RT_SIGACTION, uintptr(sig), uintptr(unsafe.Pointer(&dfl)), 0, 8, 0, 0); e == 0 {
			reset = append(reset, sig)
		}
	}
	return reset
}
