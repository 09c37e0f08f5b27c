// baton-exec is the program between baton's fork and a service's exec (handoff/execshim): it
// sets LISTEN_PID and WATCHDOG_PID to its own pid, applies limits, umask, capabilities and the
// user, then execs the service. The init binary does the same when run as baton-exec; this one
// is small, so a service starts sooner.
package main

import (
	"os"

	"github.com/baton-init/baton/handoff/execshim"
)

func main() { os.Exit(execshim.Main(os.Args[1:])) }
