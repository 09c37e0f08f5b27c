// Command init is baton: PID 1 of an appliance, a subreaper supervisor outside PID 1, and the
// kernel's modprobe helper, chosen by how it is started.
package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/baton-init/baton/control"
	"github.com/baton-init/baton/handoff/execshim"
)

func main() {
	if reexecFault == "exit" {
		os.Exit(3) // a test binary that cannot even start (init/reexec.go)
	}
	switch {
	case filepath.Base(os.Args[0]) == checkName:
		os.Exit(reexecCheckMain())
	case filepath.Base(os.Args[0]) == "initctl":
		os.Exit(control.InitctlMain(os.Args[1:], os.Stdout, os.Stderr))
	case filepath.Base(os.Args[0]) == "baton-exec":
		os.Exit(execshim.Main(os.Args[1:]))
	case filepath.Base(os.Args[0]) == "modprobe":
		os.Exit(modprobeMain(os.Args[1:]))
	case os.Getpid() == 1:
		if restoreEarly(); restoring != nil {
			pid1Restored() // never returns
		}
		pid1Main() // never returns
	default:
		restoreEarly()
		os.Exit(subreaperMain(os.Args[1:]))
	}
}

// usage is printed for -h and for bad flags outside PID 1.
const usage = `baton — PID 1 and service supervisor for appliances

As PID 1 (the kernel runs /init): boots the appliance from /etc/baton/baton.toml.
  Kernel parameters: baton.config=PATH  baton.hostname=NAME  baton.modules=a,b  baton.debug

Outside PID 1: supervises the configured services as a child subreaper.
  init [--config FILE] [--run-dir DIR] [--cgroup-root DIR] [--debug]

As initctl (/bin/initctl links to it): the control CLI; initctl --help.

As the kernel's modprobe helper (/sbin/modprobe links to it): modprobe [-q] [--] MODULE
`

func printUsage() { fmt.Fprint(os.Stderr, usage) }
