package config

import (
	"strings"

	"golang.org/x/sys/unix"
)

// SignalByName accepts "SIGTERM", "TERM" or "sigterm".
func SignalByName(name string) (unix.Signal, bool) {
	n := strings.ToUpper(name)
	if !strings.HasPrefix(n, "SIG") {
		n = "SIG" + n
	}
	s := unix.SignalNum(n)
	return s, s != 0
}
