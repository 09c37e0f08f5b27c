package control

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"strings"

	"github.com/baton-init/baton/services"
	"github.com/baton-init/baton/system"
)

// statusCmd is initctl status: with no name the table (status); with names each one in full,
// as systemctl status shows a unit: its state and settings, command line, main pid, memory,
// process tree and last 10 log lines.
func (ic *initctl) statusCmd(args []string) error {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	asJSON := fs.Bool("json", false, "")
	lines := fs.Int("n", 10, "")
	names, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(names) == 0 {
		return ic.status(args)
	}
	if *asJSON {
		return ic.statusJSON(names)
	}
	var errs []error
	for i, name := range names {
		if i > 0 {
			fmt.Fprintln(ic.out)
		}
		if err := ic.statusFull(name, *lines); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// statusJSON keeps one name's answer what it was (the Status object); several give a list.
func (ic *initctl) statusJSON(names []string) error {
	var list []services.Status
	for _, name := range names {
		s, err := ic.c.Service(name)
		if err != nil {
			return err
		}
		list = append(list, s)
	}
	enc := json.NewEncoder(ic.out)
	enc.SetIndent("", "  ")
	if len(list) == 1 {
		return enc.Encode(list[0])
	}
	return enc.Encode(list)
}

func (ic *initctl) statusFull(name string, n int) error {
	s, err := ic.c.Service(name)
	if err != nil {
		return err
	}
	if err := ic.statusDetail(s); err != nil {
		return err
	}
	esc := system.EscapeControls
	p, err := ic.c.Processes(name)
	if err != nil {
		return err
	}
	if len(p.Cmdline) > 0 {
		fmt.Fprintf(ic.out, "command:  %s\n", esc(strings.Join(p.Cmdline, " ")))
	}
	if p.MemorySource != "" {
		fmt.Fprintf(ic.out, "memory:   %s (%s)\n", humanBytes(p.Memory), map[string]string{"cgroup": "cgroup memory.current", "rss": "resident, summed over its processes"}[p.MemorySource])
	}
	if len(p.Tree) > 0 {
		fmt.Fprintln(ic.out, "processes:")
		for _, pr := range p.Tree {
			mark := ""
			if pr.Pid == s.Pid {
				mark = " (main)"
			}
			fmt.Fprintf(ic.out, "  %s%s%d %s%s\n", strings.Repeat("  ", pr.Depth), branch(pr.Depth), pr.Pid, esc(pr.Cmdline), mark)
		}
	}
	if n <= 0 {
		return nil
	}
	logs, err := ic.c.Logs(name, n)
	if err != nil {
		return err
	}
	if len(logs) > 0 {
		fmt.Fprintln(ic.out, "last lines:")
		for _, l := range logs {
			fmt.Fprintf(ic.out, "  %s %s\n", l.Time.Format("15:04:05.000"), esc(l.Text))
		}
	}
	return nil
}

func branch(depth int) string {
	if depth == 0 {
		return ""
	}
	return "└─"
}

func humanBytes(b int64) string {
	const k = 1024
	switch {
	case b >= k*k*k:
		return fmt.Sprintf("%.1fG", float64(b)/(k*k*k))
	case b >= k*k:
		return fmt.Sprintf("%.1fM", float64(b)/(k*k))
	case b >= k:
		return fmt.Sprintf("%.1fK", float64(b)/k)
	}
	return fmt.Sprintf("%dB", b)
}

// logsCmd is initctl logs: one service (and -f to follow) as before; with no name, several
// (-u NAME, repeatable, or names), or --since, the lines of those services merged by time.
func (ic *initctl) logsCmd(args []string) error {
	fs := flag.NewFlagSet("logs", flag.ContinueOnError)
	follow := fs.Bool("f", false, "")
	n := fs.Int("n", 100, "")
	since := fs.String("since", "", "")
	asJSON := fs.Bool("json", false, "")
	boot := fs.Int("boot", 0, "")
	kernel := fs.Bool("kernel", false, "")
	var units []string
	fs.Func("u", "", func(v string) error { units = append(units, v); return nil })
	names, err := parse(fs, args)
	if err != nil {
		return err
	}
	names = append(units, names...)
	if *follow {
		if len(names) != 1 || *since != "" || *asJSON || *boot != 0 || *kernel {
			return &usageError{"logs -f follows exactly one service (without --since, --json, --boot or --kernel)"}
		}
		return ic.logs([]string{"-f", "-n", fmt.Sprint(*n), names[0]})
	}
	if *kernel && len(names) > 0 {
		return &usageError{"logs --kernel shows the kernel's lines: it takes no service name"}
	}
	lines, err := ic.c.MergedLogs(LogQuery{Names: names, Since: *since, N: *n, Boot: *boot, Kernel: *kernel})
	if *asJSON {
		enc := json.NewEncoder(ic.out)
		for _, l := range lines {
			if e := enc.Encode(l); e != nil {
				return e
			}
		}
		return err
	}
	one := len(names) == 1 || *kernel
	for _, l := range lines {
		if one { // as before: the service is the one asked for
			fmt.Fprintf(ic.out, "%s %s\n", l.Time.Format("15:04:05.000"), system.EscapeControls(l.Text))
			continue
		}
		fmt.Fprintf(ic.out, "%s %s: %s\n", l.Time.Format("15:04:05.000"), l.Service, system.EscapeControls(l.Text))
	}
	return err
}
