package handoff

import (
	"strconv"
	"strings"
)

// Environment of the listen-fd protocol (sd_listen_fds(3)) and of baton's own channels.
const (
	ListenFdsStart = 3
	// EnvCtlFD names the fd of the channel baton keeps with each process it starts; it is not
	// counted in LISTEN_FDS, so daemons that take every passed fd as a listener are not confused.
	EnvCtlFD = "BATON_CTL_FD"
	// EnvHandoffFD names the fd on which a new generation receives live connections.
	EnvHandoffFD = "BATON_HANDOFF_FD"
)

// NamedFile is an fd to pass to a service, with its LISTEN_FDNAMES name.
type NamedFile struct {
	Name string
	Fd   int
}

// PassEnv returns the environment that describes files passed at fds 3, 4, …; LISTEN_PID is
// added by the exec shim, which knows the service's pid.
func PassEnv(files []NamedFile) []string {
	if len(files) == 0 {
		return nil
	}
	names := make([]string, len(files))
	for i, f := range files {
		names[i] = f.Name
	}
	return []string{"LISTEN_FDS=" + strconv.Itoa(len(files)), "LISTEN_FDNAMES=" + strings.Join(names, ":")}
}
