package control

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"

	"github.com/baton-init/baton/services"
	"github.com/baton-init/baton/system"
)

// Exit codes of initctl, for scripts.
const (
	ExitOK          = 0
	ExitFailed      = 1 // the operation ran and failed (e.g. the service did not start)
	ExitUsage       = 2
	ExitUnknown     = 3 // no such service
	ExitNotAllowed  = 4 // not root / no valid client certificate
	ExitUnreachable = 5 // no baton at the socket or address
)

const initctlUsage = `usage: initctl [--socket PATH | --remote HOST:PORT --tls-dir DIR] COMMAND [ARGS]

Commands:
  status [NAME...] [--json] [-n N]
                              services: state, pid, uptime, restarts, last exit; with names,
                              each in full: command line, memory, process tree, last N lines (10)
  start NAME...               start (and wait until ready)
  stop NAME...                stop (stop signal, then SIGKILL after stop_timeout)
  restart NAME...             stop, start, wait until ready
  upgrade NAME [--exec PATH]  new version on the same sockets, then the old one stops
  reload NAME...              reload_signal (SIGHUP) to the main process; notify services: and
                              wait for RELOADING=1 … READY=1
  kill NAME... [--signal SIG] [--main]
                              a signal to every process of the service (--main: the main one)
  is-active NAME... [-q]      "active" (exit 0) or the state (exit 3), as systemctl
  is-failed NAME... [-q]      "failed" (exit 0) or the state (exit 1), as systemctl
  show NAME [--json] [-p KEY,…]
                              every setting with its effective value (defaults filled in)
  cat NAME...                 the service's block of the config file
  list-dependencies NAME      what it requires, wants and is ordered after, as a tree
  logs [-f] [-n N] NAME       a service's output (-f: follow; -n: last N lines, 0 all)
  logs [-u NAME]... [--since WHEN] [--json] [-n N]
                              several services' output (default: all) merged by time; WHEN:
                              "2006-01-02 15:04:05", "15:04", "10m" (ago), today, yesterday
  reboot | poweroff | halt    stop services and power the machine (reboot: through the firmware)
  kexec [--kernel PATH] [--initrd PATH] [--append ARGS | --cmdline ARGS | --reuse-cmdline]
        [--method fast|file] [--load-only] [--unload]
                              load a kernel while services run, then stop them and jump into it
  analyze [--json]            boot timeline: what ran when, in parallel, and what it waited for
  update --kernel FILE --initrd FILE [--cmdline ARGS] [--dry-run] [--no-wait] [--timeout D]
                              ship a new image (make image's out/initramfs.img and a kernel):
                              services-only changes are upgraded in place, others kexec into
                              the new slot; confirmed when every service is ready, else undone
  update --status [--json]    both slots, the running image, the last update and its outcome
  rollback [--dry-run] [--no-wait]
                              back to the other confirmed slot, the least disruptive way
  reexec [--binary FILE]      baton executes a new version of itself (default: the running
                              binary again; FILE is uploaded), every service kept running;
                              tried first, and undone if the new one cannot take over
  version                     the running binary's version and SHA-256, and the last reexec
  reload-config               read the config again and apply it: removed services stop, added
                              ones start, changed exec/env upgrade over the held sockets, other
                              changes restart; unchanged services keep running

The socket is /run/baton/control.sock unless --socket or $BATON_SOCKET says otherwise.
Exit codes: 0 ok, 1 failed, 2 usage, 3 unknown service, 4 not permitted, 5 baton unreachable.
`

// InitctlMain runs initctl with args (without the program name) and returns its exit code.
func InitctlMain(args []string, stdout, stderr io.Writer) int {
	global := flag.NewFlagSet("initctl", flag.ContinueOnError)
	global.SetOutput(stderr)
	global.Usage = func() { fmt.Fprint(stderr, initctlUsage) }
	socket := global.String("socket", envOr("BATON_SOCKET", DefaultSocket), "local control socket")
	remote := global.String("remote", "", "HOST:PORT of a remote appliance's API")
	tlsDir := global.String("tls-dir", envOr("BATON_TLS_DIR", "out/tls"), "client certificate, key and CA for --remote")
	if err := global.Parse(args); err != nil {
		return ExitUsage
	}
	if global.NArg() == 0 {
		global.Usage()
		return ExitUsage
	}
	var c *Client
	if *remote != "" {
		var err error
		if c, err = NewRemote(*remote, *tlsDir); err != nil {
			fmt.Fprintln(stderr, "initctl:", err)
			return ExitUsage
		}
	} else {
		c = NewLocal(*socket)
	}
	cmd, rest := global.Arg(0), global.Args()[1:]
	ic := &initctl{c: c, out: stdout, err: stderr}
	run, ok := map[string]func([]string) error{
		"status": ic.statusCmd, "start": ic.action("start"), "stop": ic.action("stop"),
		"restart": ic.action("restart"), "upgrade": ic.upgrade, "logs": ic.logsCmd, "reboot": ic.power("reboot"),
		"poweroff": ic.power("poweroff"), "halt": ic.power("halt"), "analyze": ic.analyze, "kexec": ic.kexec,
		"reload-config": ic.reloadConfig, "update": ic.update, "rollback": ic.rollback,
		"reload": ic.action("reload"), "kill": ic.kill, "show": ic.show, "cat": ic.cat,
		"is-active": ic.isState("is-active", isActive, 3), "is-failed": ic.isState("is-failed", isFailed, 1),
		"list-dependencies": ic.listDependencies,
	}[cmd]
	if !ok {
		run, ok = ic.reexecCommands()[cmd]
	}
	if !ok {
		fmt.Fprintf(stderr, "initctl: unknown command %q\n\n%s", cmd, initctlUsage)
		return ExitUsage
	}
	return exitCode(stderr, run(rest))
}

type initctl struct {
	c   *Client
	out io.Writer
	err io.Writer
}

type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func exitCode(stderr io.Writer, err error) int {
	if err == nil {
		return ExitOK
	}
	if es, ok := err.(exitStatus); ok { // is-active, is-failed: the answer is the code
		return int(es)
	}
	fmt.Fprintln(stderr, "initctl:", err)
	var ue *usageError
	var ae *APIError
	var ce *ConnError
	switch {
	case errors.As(err, &ue):
		return ExitUsage
	case errors.As(err, &ce):
		return ExitUnreachable
	case errors.As(err, &ae) && ae.Code == 404:
		return ExitUnknown
	case errors.As(err, &ae) && ae.Code == 403:
		return ExitNotAllowed
	}
	return ExitFailed
}

// parse parses flags given anywhere among the arguments and returns the others.
func parse(fs *flag.FlagSet, args []string) ([]string, error) {
	fs.SetOutput(io.Discard)
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, &usageError{fmt.Sprintf("%s: %v", fs.Name(), err)}
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

func (ic *initctl) status(args []string) error {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	asJSON := fs.Bool("json", false, "")
	names, err := parse(fs, args)
	if err != nil {
		return err
	}
	var list []services.Status
	switch len(names) {
	case 0:
		list, err = ic.c.Services()
	case 1:
		var s services.Status
		s, err = ic.c.Service(names[0])
		list = []services.Status{s}
	default:
		return &usageError{"status takes at most one service name"}
	}
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(ic.out)
		enc.SetIndent("", "  ")
		if len(names) == 1 {
			return enc.Encode(list[0])
		}
		return enc.Encode(list)
	}
	if len(names) == 1 {
		return ic.statusDetail(list[0])
	}
	tw := tabwriter.NewWriter(ic.out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tSTATE\tPID\tUPTIME\tRESTARTS\tLAST EXIT\tSTATUS")
	for _, s := range list {
		note := s.Status
		if s.Error != "" {
			note = s.Error
		}
		esc := system.EscapeControls // STATUS= and errors are a service's words, not a terminal's commands
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\n", esc(s.Name), esc(string(s.State)), dash(pidString(s.Pid)), dash(esc(s.Uptime)),
			s.Restarts, dash(esc(s.LastExit)), esc(note))
	}
	return tw.Flush()
}

// statusDetail prints one service in full: what the table has, plus sockets, stored fds and,
// during an upgrade, both generations.
func (ic *initctl) statusDetail(s services.Status) error {
	tw := tabwriter.NewWriter(ic.out, 0, 4, 1, ' ', 0)
	row := func(k, v string) {
		if v != "" {
			fmt.Fprintf(tw, "%s:\t%s\n", k, system.EscapeControls(v))
		}
	}
	row("service", s.Name)
	row("state", string(s.State))
	row("pid", pidString(s.Pid))
	row("exec", s.Exec)
	row("uptime", s.Uptime)
	row("restarts", fmt.Sprint(s.Restarts))
	if s.Upgrades > 0 {
		row("upgrades", fmt.Sprint(s.Upgrades))
	}
	row("last exit", s.LastExit)
	row("status", s.Status)
	row("error", s.Error)
	row("cgroup", s.Cgroup)
	for _, g := range s.Generations {
		row("generation", fmt.Sprintf("%s pid %d %s (ready: %v)", g.Role, g.Pid, g.Exec, g.Ready))
	}
	for _, so := range s.Sockets {
		row("socket", so.Name+" "+so.Listen)
	}
	for _, f := range s.Stored {
		row("stored fd", fmt.Sprintf("%s (%s)", f.Name, f.Kind))
	}
	return tw.Flush()
}

func (ic *initctl) action(action string) func([]string) error {
	return func(args []string) error {
		if len(args) == 0 {
			return &usageError{action + " needs a service name"}
		}
		for _, name := range args {
			r, err := ic.c.Action(name, action)
			if err != nil {
				return err
			}
			msg := fmt.Sprintf("%s: %s in %s", name, r.Status.State, r.Took)
			if len(r.AlsoStopped) > 0 {
				msg += fmt.Sprintf(" (stopped first, as they require it: %s)", strings.Join(r.AlsoStopped, ", "))
			}
			if len(r.Killed) > 0 {
				msg += fmt.Sprintf(" (killed after stop_timeout: %s)", strings.Join(r.Killed, ", "))
			}
			fmt.Fprintln(ic.out, msg)
		}
		return nil
	}
}

func (ic *initctl) upgrade(args []string) error {
	fs := flag.NewFlagSet("upgrade", flag.ContinueOnError)
	exec := fs.String("exec", "", "")
	names, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(names) != 1 {
		return &usageError{"upgrade needs exactly one service name"}
	}
	r, err := ic.c.Upgrade(names[0], *exec)
	if err != nil {
		return err
	}
	u := r.Upgrade
	fmt.Fprintf(ic.out, "%s: upgraded pid %d → %d in %s (new version ready after %s, old one drained in %s",
		names[0], u.OldPid, u.NewPid, r.Took, ms(u.ReadyAfter), ms(u.Drained))
	if u.Handoff {
		fmt.Fprint(ic.out, ", connections handed over")
	}
	if u.Killed {
		fmt.Fprint(ic.out, ", old one killed after stop_timeout")
	}
	fmt.Fprintln(ic.out, ")")
	return nil
}

func (ic *initctl) logs(args []string) error {
	fs := flag.NewFlagSet("logs", flag.ContinueOnError)
	follow := fs.Bool("f", false, "")
	n := fs.Int("n", 100, "")
	names, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(names) != 1 {
		return &usageError{"logs needs exactly one service name"}
	}
	print := func(l services.LogLine) {
		fmt.Fprintf(ic.out, "%s %s\n", l.Time.Format("15:04:05.000"), l.Text)
	}
	if !*follow {
		lines, err := ic.c.Logs(names[0], *n)
		for _, l := range lines {
			print(l)
		}
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return ic.c.FollowLogs(ctx, names[0], *n, print)
}

func (ic *initctl) power(action string) func([]string) error {
	return func(args []string) error {
		if len(args) != 0 {
			return &usageError{action + " takes no arguments"}
		}
		if err := ic.c.Power(action); err != nil {
			return err
		}
		fmt.Fprintf(ic.out, "%s: services are stopping\n", action)
		return nil
	}
}

func (ic *initctl) kexec(args []string) error {
	fs := flag.NewFlagSet("kexec", flag.ContinueOnError)
	var req KexecRequest
	fs.StringVar(&req.Kernel, "kernel", "", "")
	fs.StringVar(&req.Initrd, "initrd", "", "")
	fs.StringVar(&req.Append, "append", "", "")
	fs.StringVar(&req.Cmdline, "cmdline", "", "")
	fs.BoolVar(&req.ReuseCmdline, "reuse-cmdline", false, "")
	fs.BoolVar(&req.LoadOnly, "load-only", false, "")
	fs.BoolVar(&req.Unload, "unload", false, "")
	fs.StringVar(&req.Method, "method", "", "")
	if rest, err := parse(fs, args); err != nil || len(rest) > 0 {
		return &usageError{"kexec takes only flags: [--kernel PATH] [--initrd PATH] [--append ARGS | --cmdline ARGS | --reuse-cmdline] [--method fast|file] [--load-only] [--unload]"}
	}
	if req.Method != "" && req.Method != "fast" && req.Method != "file" {
		return &usageError{fmt.Sprintf("--method %q: fast or file", req.Method)}
	}
	if req.Cmdline != "" && (req.Append != "" || req.ReuseCmdline) {
		return &usageError{"--cmdline replaces the command line: it does not go with --append or --reuse-cmdline"}
	}
	r, err := ic.c.Kexec(req)
	if err != nil {
		return err
	}
	switch {
	case req.Unload:
		fmt.Fprint(ic.out, "kexec: ")
	case r.Jumping:
		fmt.Fprintf(ic.out, "kexec: loaded %s in %dms; services are stopping, then the jump\n  initrd: %s\n  cmdline: %s\n", r.Kernel, r.LoadMs, dash(r.Initrd), r.Cmdline)
	default:
		fmt.Fprintf(ic.out, "kexec: loaded %s in %dms\n  initrd: %s\n  cmdline: %s\n  ", r.Kernel, r.LoadMs, dash(r.Initrd), r.Cmdline)
	}
	if r.Method != "" && !req.Unload {
		fmt.Fprintf(ic.out, "  method: %s", r.Method)
		switch {
		case r.Fallback != "":
			fmt.Fprintf(ic.out, " (the fast method was refused: %s)", r.Fallback)
		case r.KASLR != "":
			fmt.Fprintf(ic.out, " (KASLR: %s)", r.KASLR)
		}
		fmt.Fprintln(ic.out)
	}
	if r.Note != "" {
		fmt.Fprintln(ic.out, r.Note)
	}
	return nil
}

func (ic *initctl) analyze(args []string) error {
	fs := flag.NewFlagSet("analyze", flag.ContinueOnError)
	asJSON := fs.Bool("json", false, "")
	if rest, err := parse(fs, args); err != nil || len(rest) > 0 {
		return &usageError{"analyze takes only --json"}
	}
	t, err := ic.c.Timeline()
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(ic.out)
		enc.SetIndent("", "  ")
		return enc.Encode(t)
	}
	return writeTimeline(ic.out, t)
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func pidString(pid int) string {
	if pid == 0 {
		return ""
	}
	return fmt.Sprint(pid)
}
