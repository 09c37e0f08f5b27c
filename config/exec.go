package config

import (
	"fmt"
	"math"
	"path"
	"slices"
	"strconv"
	"strings"
)

// Limit is a resource limit as systemd's Limit*= writes it: "N" (soft and hard), "soft:hard",
// either side "infinity".
type Limit struct{ Soft, Hard uint64 }

// Infinity is RLIM_INFINITY.
const Infinity = math.MaxUint64

// ParseLimit reads a Limit; "" is no limit set (ok false, err nil).
func ParseLimit(s string) (l Limit, ok bool, err error) {
	if s == "" {
		return Limit{}, false, nil
	}
	one := func(v string) (uint64, error) {
		if v == "infinity" {
			return Infinity, nil
		}
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%s is not a number or \"infinity\"", quote(v))
		}
		return n, nil
	}
	soft, hard, pair := strings.Cut(s, ":")
	if l.Soft, err = one(soft); err != nil {
		return l, false, err
	}
	l.Hard = l.Soft
	if pair {
		if l.Hard, err = one(hard); err != nil {
			return l, false, err
		}
	}
	if l.Soft > l.Hard {
		return l, false, fmt.Errorf("soft limit %s above the hard one", quote(s))
	}
	return l, true, nil
}

// Limits lists the service's resource limits by RLIMIT_ name.
func (s Service) Limits() map[string]string {
	return map[string]string{"NOFILE": s.LimitNOFILE, "NPROC": s.LimitNPROC, "CORE": s.LimitCORE}
}

// NeedsShim reports settings only the baton-exec shim can apply, between fork and exec.
func (s Service) NeedsShim() bool {
	return s.UMask != "" || s.LimitNOFILE != "" || s.LimitNPROC != "" || s.LimitCORE != "" || s.NoNewPrivileges ||
		s.Capabilities != nil
}

// Command is one of exec_start_pre or exec_stop_post: its argv, with systemd's "-" prefix
// (its failure is ignored) taken off the path.
type Command struct {
	Argv         []string
	IgnoreFailed bool
}

// ParseCommand reads one exec_start_pre or exec_stop_post entry.
func ParseCommand(argv []string) Command {
	c := Command{Argv: append([]string(nil), argv...)}
	if len(c.Argv) > 0 {
		c.Argv[0], c.IgnoreFailed = strings.CutPrefix(c.Argv[0], "-")
	}
	return c
}

func validateCommands(k string, s Service) []problem {
	var ps []problem
	for _, l := range []struct {
		key  string
		cmds [][]string
	}{{"exec_start_pre", s.ExecStartPre}, {"exec_stop_post", s.ExecStopPost}} {
		for i, argv := range l.cmds {
			c := ParseCommand(argv)
			msg := ""
			switch {
			case len(c.Argv) == 0 || c.Argv[0] == "":
				msg = "is empty (write e.g. [\"/bin/mkdir\", \"-p\", \"/run/web\"])"
			case !path.IsAbs(c.Argv[0]):
				msg = fmt.Sprintf("%s must be an absolute path (a leading \"-\": its failure is ignored)", quote(argv[0]))
			case slices.ContainsFunc(c.Argv, func(a string) bool { return strings.IndexByte(a, 0) >= 0 }):
				msg = "contains a NUL byte"
			}
			if msg != "" {
				ps = append(ps, problem{key: k + "." + l.key, msg: fmt.Sprintf("service %s: command %d %s", quote(s.Name), i+1, msg)})
			}
		}
	}
	return append(ps, validateCaps(k, s)...)
}

func validateExec(k string, s Service) []problem {
	var ps []problem
	add := func(key, format string, args ...any) {
		ps = append(ps, problem{key: key, msg: fmt.Sprintf("service %s: ", quote(s.Name)) + fmt.Sprintf(format, args...)})
	}
	ps = append(ps, validateCommands(k, s)...)
	for _, f := range s.EnvironmentFile {
		if p := strings.TrimPrefix(f, "-"); !path.IsAbs(p) {
			add(k+".environment_file", "%s must be an absolute path (a leading \"-\": it may be missing)", quote(f))
		}
	}
	if s.UMask != "" {
		if m, err := strconv.ParseUint(s.UMask, 8, 32); err != nil || m > 0o777 {
			add(k+".umask", "%s is not an octal mask (e.g. \"0027\")", quote(s.UMask))
		}
	}
	for key, v := range map[string]string{"limit_nofile": s.LimitNOFILE, "limit_nproc": s.LimitNPROC, "limit_core": s.LimitCORE} {
		if _, _, err := ParseLimit(v); err != nil {
			add(k+"."+key, "%v (write \"1024\", \"1024:4096\" or \"infinity\")", err)
		}
	}
	for _, g := range s.SupplementaryGroups {
		if g == "" || strings.ContainsAny(g, ":\n\x00") {
			add(k+".supplementary_groups", "%s is not a group name or gid", quote(g))
		}
	}
	return ps
}
