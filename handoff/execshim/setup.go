package execshim

import (
	"fmt"
	"runtime"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// What the baton-exec shim applies between fork and exec, passed to it in the environment
// (and removed before the service sees it): Go's os/exec cannot run code in the child, so
// resource limits, the umask, capabilities and PR_SET_NO_NEW_PRIVS are set here, and the user
// is switched here too, after the limits (raising a hard limit needs root) and the bounding
// set (dropping needs CAP_SETPCAP), before the ambient set (a setuid clears it).
const (
	EnvExecUmask  = "BATON_EXEC_UMASK"   // octal
	EnvExecNNP    = "BATON_EXEC_NNP"     // "1"
	EnvExecCred   = "BATON_EXEC_CRED"    // uid:gid:g1,g2,…
	EnvExecRlimit = "BATON_EXEC_RLIMIT_" // + NOFILE, NPROC, CORE = soft:hard
)

var rlimits = map[string]int{"NOFILE": unix.RLIMIT_NOFILE, "NPROC": unix.RLIMIT_NPROC, "CORE": unix.RLIMIT_CORE}

// execSetup applies the BATON_EXEC_ settings of env and returns env without them.
func execSetup(env []string) ([]string, error) {
	// Credentials are per thread; execve runs on this one.
	runtime.LockOSThread()
	set := map[string]string{}
	kept := env[:0]
	for _, kv := range env {
		if strings.HasPrefix(kv, "BATON_EXEC_") {
			k, v, _ := strings.Cut(kv, "=")
			set[k] = v
			continue
		}
		kept = append(kept, kv)
	}
	for name, res := range rlimits {
		v, ok := set[EnvExecRlimit+name]
		if !ok {
			continue
		}
		soft, hard, _ := strings.Cut(v, ":")
		var l unix.Rlimit
		var err1, err2 error
		l.Cur, err1 = strconv.ParseUint(soft, 10, 64)
		l.Max, err2 = strconv.ParseUint(hard, 10, 64)
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("%s%s=%q: not soft:hard", EnvExecRlimit, name, v)
		}
		if err := unix.Setrlimit(res, &l); err != nil {
			return nil, fmt.Errorf("setrlimit(RLIMIT_%s, %d:%d): %w", name, l.Cur, l.Max, err)
		}
	}
	if v, ok := set[EnvExecUmask]; ok {
		m, err := strconv.ParseUint(v, 8, 32)
		if err != nil {
			return nil, fmt.Errorf("%s=%q: not octal", EnvExecUmask, v)
		}
		unix.Umask(int(m))
	}
	capsV, withCaps := set[EnvExecCaps]
	var caps uint64
	if withCaps {
		var err error
		if caps, err = parseCaps(capsV); err != nil {
			return nil, err
		}
		if err := dropBounding(caps); err != nil {
			return nil, err
		}
	}
	if v, ok := set[EnvExecCred]; ok {
		if withCaps && caps != 0 {
			if err := keepCapsAcrossSetuid(); err != nil {
				return nil, err
			}
		}
		if err := switchUser(v); err != nil {
			return nil, err
		}
	}
	if withCaps {
		if err := raiseAmbient(caps); err != nil {
			return nil, err
		}
	}
	if set[EnvExecNNP] == "1" {
		if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
			return nil, fmt.Errorf("prctl(PR_SET_NO_NEW_PRIVS): %w", err)
		}
	}
	return kept, nil
}

// switchUser sets groups, gid and uid from "uid:gid:g1,g2".
func switchUser(v string) error {
	f := strings.SplitN(v, ":", 3)
	if len(f) != 3 {
		return fmt.Errorf("%s=%q: not uid:gid:groups", EnvExecCred, v)
	}
	uid, err1 := strconv.Atoi(f[0])
	gid, err2 := strconv.Atoi(f[1])
	if err1 != nil || err2 != nil {
		return fmt.Errorf("%s=%q: not uid:gid:groups", EnvExecCred, v)
	}
	groups := []int{}
	for _, g := range strings.Split(f[2], ",") {
		if g == "" {
			continue
		}
		n, err := strconv.Atoi(g)
		if err != nil {
			return fmt.Errorf("%s=%q: group %q is not a number", EnvExecCred, v, g)
		}
		groups = append(groups, n)
	}
	if err := unix.Setgroups(groups); err != nil {
		return fmt.Errorf("setgroups(%v): %w", groups, err)
	}
	if err := unix.Setresgid(gid, gid, gid); err != nil {
		return fmt.Errorf("setresgid(%d): %w", gid, err)
	}
	if err := unix.Setresuid(uid, uid, uid); err != nil {
		return fmt.Errorf("setresuid(%d): %w", uid, err)
	}
	return nil
}
