package config

import (
	"fmt"
	"path"
)

// validateType checks what depends on a service's type (systemd's Type=): readiness, the pid
// file, remain_after_exit, and the settings that only make sense for a long-running process
// baton started itself.
func validateType(k string, s Service) []problem {
	var ps []problem
	add := func(key, format string, args ...any) {
		ps = append(ps, problem{key: key, msg: fmt.Sprintf("service %s: ", quote(s.Name)) + fmt.Sprintf(format, args...)})
	}
	switch s.Type {
	case TypeSimple, TypeForking, TypeOneshot:
	default:
		add(k+".type", "%s is not a service type (simple, forking or oneshot)", quote(s.Type))
		return ps
	}
	if s.Type != TypeSimple && s.Ready != "" {
		add(k+".ready", "ready applies to type = \"simple\" only; a %s service is ready when %s", s.Type, readyWhen[s.Type])
	}
	if s.Type == TypeForking {
		if s.PIDFile == "" {
			add(k, "type = \"forking\" needs pid_file (where the daemon writes its pid, e.g. \"/run/nginx.pid\")")
		} else if !path.IsAbs(s.PIDFile) {
			add(k+".pid_file", "%s must be an absolute path", quote(s.PIDFile))
		}
	} else if s.PIDFile != "" {
		add(k+".pid_file", "pid_file applies to type = \"forking\" only")
	}
	if s.RemainAfterExit && s.Type != TypeOneshot {
		add(k+".remain_after_exit", "remain_after_exit applies to type = \"oneshot\" only")
	}
	if s.Type == TypeOneshot && s.Restart == RestartAlways {
		add(k+".restart", "restart = \"always\" would run a oneshot task forever; use on-failure or never")
	}
	if _, ok := SignalByName(s.ReloadSignal); !ok {
		add(k+".reload_signal", "%s is not a signal name (e.g. SIGHUP, SIGUSR1)", quote(s.ReloadSignal))
	}
	if _, ok := SignalByName(s.WatchdogSignal); !ok {
		add(k+".watchdog_signal", "%s is not a signal name (e.g. SIGABRT, SIGKILL)", quote(s.WatchdogSignal))
	}
	if s.KillMode != KillControlGroup && s.KillMode != KillMixed {
		add(k+".kill_mode", "%s is not a kill mode (control-group or mixed)", quote(s.KillMode))
	}
	for _, l := range []struct {
		key  string
		list []int
	}{{"success_exit_status", s.SuccessExitStatus}, {"restart_prevent_exit_status", s.RestartPreventExitStatus}} {
		for _, n := range l.list {
			if n < 0 || n > 255 {
				add(k+"."+l.key, "%d is not an exit status (0-255)", n)
			}
		}
	}
	ps = append(ps, validateExec(k, s)...)
	if s.Type != TypeSimple {
		// An upgrade runs two versions side by side on held sockets; a watchdog and the fd
		// store need the notify socket of a process baton started: all are simple's.
		if s.Watchdog.Duration > 0 {
			add(k+".watchdog", "watchdog applies to type = \"simple\" only")
		}
		if len(s.Socket) > 0 && s.Type == TypeOneshot {
			add(k+".socket", "a oneshot task holds no sockets")
		}
	}
	return ps
}

var readyWhen = map[string]string{
	TypeForking: "its started process exited 0 and pid_file names a live process",
	TypeOneshot: "its process exited 0",
}
