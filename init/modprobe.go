package main

import (
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/baton-init/baton/system"
	"github.com/baton-init/baton/system/kmod"
)

// modprobeMain answers the kernel's request_module(): the kernel runs
// "/sbin/modprobe -q -- NAME", where NAME is a module name or an alias such as crypto-crc32c.
// It has no console, so it logs to /dev/kmsg.
func modprobeMain(args []string) int {
	quiet := false
	var names []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--":
			names = append(names, args[i+1:]...)
			i = len(args)
		case a == "-q" || a == "--quiet":
			quiet = true
		case strings.HasPrefix(a, "-"):
			// Other modprobe flags (-b, -s, …) do not change what to load here.
		default:
			names = append(names, a)
		}
	}
	out := system.OpenKmsg()
	if out == nil {
		out = os.Stderr
	}
	log := slog.New(system.NewConsoleHandler(os.Stderr, nil, slog.LevelInfo))
	if len(names) == 0 {
		fmt.Fprintln(os.Stderr, "usage: modprobe [-q] [--] MODULE")
		return 1
	}
	loader, err := kmod.NewLoader("/", log)
	if err != nil {
		fmt.Fprintf(out, "baton modprobe: %v\n", err)
		return 1
	}
	status := 0
	for _, what := range names {
		mods := loader.Index.Resolve(what)
		if len(mods) == 0 {
			if !loader.Index.IsBuiltin(what) {
				if !quiet {
					fmt.Fprintf(out, "baton modprobe: %s: no module in the image provides it\n", what)
				}
				status = 1
			}
			continue
		}
		if done, err := loader.Load(mods...); err != nil {
			fmt.Fprintf(out, "baton modprobe: %s: %v\n", what, err)
			status = 1
		} else if len(done) > 0 {
			fmt.Fprintf(out, "baton modprobe: %s: loaded %s\n", what, strings.Join(done, ","))
		}
	}
	return status
}
