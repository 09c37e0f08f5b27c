package client

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

const listenFdsStart = 3

var (
	filesOnce sync.Once
	files     []*os.File
	filesErr  error
)

// Files returns the fds passed by the listen-fd protocol (LISTEN_FDS, LISTEN_FDNAMES,
// LISTEN_PID), named, in order: sockets first, then fds from the store. They are wrapped once;
// later calls return the same files. None when the variables are absent or LISTEN_PID is
// another process's (they were meant for a parent).
func Files() ([]*os.File, error) {
	filesOnce.Do(func() {
		n, err := strconv.Atoi(os.Getenv("LISTEN_FDS"))
		if err != nil || n <= 0 {
			return
		}
		if pid, err := strconv.Atoi(os.Getenv("LISTEN_PID")); err != nil || pid != os.Getpid() {
			return
		}
		names := strings.Split(os.Getenv("LISTEN_FDNAMES"), ":")
		for i := 0; i < n; i++ {
			name := "unknown"
			if i < len(names) && names[i] != "" {
				name = names[i]
			}
			// The service's own children must not inherit its listening sockets (as
			// go-systemd's activation.Files): they arrive without FD_CLOEXEC.
			unix.CloseOnExec(listenFdsStart + i)
			files = append(files, os.NewFile(uintptr(listenFdsStart+i), name))
		}
		// Children of the service must not take these for their own.
		for _, k := range []string{"LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"} {
			os.Unsetenv(k)
		}
	})
	return files, filesErr
}

// Listeners returns the passed stream sockets by name (the first one of each name).
func Listeners() (map[string]net.Listener, error) {
	fs, err := Files()
	if err != nil {
		return nil, err
	}
	out := map[string]net.Listener{}
	for _, f := range fs {
		if _, dup := out[f.Name()]; dup {
			continue
		}
		l, err := net.FileListener(f)
		if err != nil {
			continue // not a listening stream socket (a datagram socket, a stored fd)
		}
		out[f.Name()] = l
	}
	return out, nil
}

// Listener returns the passed listener called name, or, when the service runs without baton
// (no such fd was passed), one it opens itself on network and addr.
func Listener(name, network, addr string) (net.Listener, error) {
	ls, err := Listeners()
	if err != nil {
		return nil, err
	}
	if l, ok := ls[name]; ok {
		return l, nil
	}
	l, err := net.Listen(network, addr)
	if err != nil {
		return nil, fmt.Errorf("no socket %q passed, and listening myself failed: %w", name, err)
	}
	return l, nil
}

// Stored returns the passed fds stored under name (from the fd store).
func Stored(name string) []*os.File {
	fs, _ := Files()
	var out []*os.File
	for _, f := range fs {
		if f.Name() == name {
			out = append(out, f)
		}
	}
	return out
}
