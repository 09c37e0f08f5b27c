package config

import (
	"fmt"
	"net"
	"net/netip"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/baton-init/baton/images/imagefmt"
)

// MaxServices bounds the services of one config. Each costs PID 1 about five fds from load on
// (its log pipes, notify socket, held sockets); 800 services exhausted the fd limit before the
// first one started.
const MaxServices = 256

// problem is a validation failure before it is located in the file.
type problem struct {
	key string // key path as positions() records it, e.g. service[0].exec
	msg string
}

// The name checks are written out rather than regular expressions: the counted repetitions
// ({0,62}) compile to large programs, and compiling them at start was the largest package init
// of PID 1 (1.8 ms and 3,554 allocations on the host; tens of ms under QEMU's TCG, on the
// boot's path).

// isServiceName: a letter or digit, then up to 63 of letters, digits, _ . @ -.
func isServiceName(s string) bool {
	if len(s) == 0 || len(s) > 64 || !isAlnum(s[0]) {
		return false
	}
	for i := 1; i < len(s); i++ {
		if c := s[i]; !isAlnum(c) && c != '_' && c != '.' && c != '@' && c != '-' {
			return false
		}
	}
	return true
}

// isHostName: dot-separated labels, each a letter or digit then up to 62 of letters, digits, -.
func isHostName(s string) bool {
	for _, label := range strings.Split(s, ".") {
		if len(label) == 0 || len(label) > 63 || !isAlnum(label[0]) {
			return false
		}
		for i := 1; i < len(label); i++ {
			if c := label[i]; !isAlnum(c) && c != '-' {
				return false
			}
		}
	}
	return true
}

// isEnvName: a letter or _, then letters, digits and _.
func isEnvName(s string) bool {
	if len(s) == 0 || !isLetter(s[0]) && s[0] != '_' {
		return false
	}
	for i := 1; i < len(s); i++ {
		if c := s[i]; !isAlnum(c) && c != '_' {
			return false
		}
	}
	return true
}

// isMemoryMax: max, or digits with an optional K, M, G or T after them.
func isMemoryMax(s string) bool {
	if s == "max" {
		return true
	}
	if n := len(s); n > 1 && strings.ContainsRune("KMGT", rune(s[n-1])) {
		s = s[:n-1]
	}
	return s != "" && strings.Trim(s, "0123456789") == ""
}

func isLetter(c byte) bool { return c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' }
func isAlnum(c byte) bool  { return isLetter(c) || c >= '0' && c <= '9' }

func (c *Config) validate() []problem {
	var ps []problem
	add := func(key, format string, args ...any) {
		ps = append(ps, problem{key: key, msg: fmt.Sprintf(format, args...)})
	}
	if c.Hostname != "" && (len(c.Hostname) > 64 || !isHostName(c.Hostname)) {
		add("hostname", "%s is not a valid host name (letters, digits, '-', at most 64)", quote(c.Hostname))
	}
	for i, m := range c.Boot.Modules {
		if m == "" || strings.ContainsAny(m, "/ ") {
			add("boot.modules", "module %d (%s) is not a module name", i, quote(m))
		}
	}
	for i, n := range c.Network {
		k := fmt.Sprintf("network[%d]", i)
		if n.Interface == "" {
			add(k, "interface is required")
		}
		if _, err := netip.ParsePrefix(n.Address); n.Address != "" && n.Address != "dhcp" && err != nil {
			add(k+".address", "%s is not an address with prefix length (e.g. 10.0.2.15/24) or \"dhcp\"", quote(n.Address))
		}
		if n.Address == "dhcp" && n.Gateway != "" {
			add(k+".gateway", "with address = \"dhcp\" the gateway comes from the lease; remove it")
		}
		if _, err := netip.ParseAddr(n.Gateway); n.Gateway != "" && err != nil {
			add(k+".gateway", "%s is not an IP address", quote(n.Gateway))
		}
		if n.MTU != 0 && (n.MTU < 68 || n.MTU > 65535) {
			add(k+".mtu", "%d is out of range (68-65535)", n.MTU)
		}
	}
	for i, m := range c.Mount {
		k := fmt.Sprintf("mount[%d]", i)
		if m.Source == "" {
			add(k, "source is required (/dev/vda1, LABEL=BOOT or PARTLABEL=BOOT)")
		} else if !strings.HasPrefix(m.Source, "/") && !strings.HasPrefix(m.Source, "LABEL=") && !strings.HasPrefix(m.Source, "PARTLABEL=") {
			add(k+".source", "%s: use a device path, LABEL= or PARTLABEL=", quote(m.Source))
		}
		if !path.IsAbs(m.Target) {
			add(k+".target", "%s must be an absolute path", quote(m.Target))
		}
		if m.Type == "" {
			add(k, "type is required (e.g. \"vfat\", \"ext4\")")
		}
	}
	if c.Kexec.Kernel != "" && !path.IsAbs(c.Kexec.Kernel) {
		add("kexec.kernel", "%s must be an absolute path", quote(c.Kexec.Kernel))
	}
	if m := c.Kexec.Method; m != "" && m != "fast" && m != "file" {
		add("kexec.method", "%s: fast or file", quote(m))
	}
	if v := c.Kexec.SpareOldCode; v != "" && v != "auto" && v != "yes" && v != "no" {
		add("kexec.spare_old_code", "%s: auto, yes or no", quote(v))
	}
	if c.Kexec.Initrd != "" && !path.IsAbs(c.Kexec.Initrd) {
		add("kexec.initrd", "%s must be an absolute path", quote(c.Kexec.Initrd))
	}
	if w := c.Watchdog; w.Device != "" && !path.IsAbs(w.Device) {
		add("watchdog.device", "%s must be an absolute path (e.g. \"/dev/watchdog\")", quote(w.Device))
	} else if w.Device == "" && w.Timeout.Duration != 0 {
		add("watchdog.timeout", "is set but device is not: set device = \"/dev/watchdog\" (and list the driver's module in [boot] modules)")
	} else if t := w.Timeout.Duration; w.Device != "" && (t%time.Second != 0 || t < 2*time.Second || t > time.Hour) {
		// WDIOC_SETTIMEOUT takes whole seconds; PID 1 pets every third of it.
		add("watchdog.timeout", "%s: use whole seconds from 2s to 1h", t)
	}
	for i, k := range c.Update.TrustedKeys {
		if _, err := imagefmt.ParsePublicKey(k); err != nil {
			add("update.trusted_keys", "key %d (%s): %v", i, quote(k), err)
		}
	}
	ps = append(ps, c.Log.validate()...)
	ps = append(ps, c.validateServices()...)
	return ps
}

func (c *Config) validateServices() []problem {
	var ps []problem
	add := func(key, format string, args ...any) {
		ps = append(ps, problem{key: key, msg: fmt.Sprintf(format, args...)})
	}
	if len(c.Service) > MaxServices {
		add(fmt.Sprintf("service[%d]", MaxServices), "%d services; at most %d are supported (each holds fds in PID 1 from load on)", len(c.Service), MaxServices)
	}
	seen := map[string]int{}
	for i, s := range c.Service {
		k := fmt.Sprintf("service[%d]", i)
		ps = append(ps, nulBytes(k, s)...)
		switch {
		case s.Name == "":
			add(k, "name is required")
		case !isServiceName(s.Name):
			add(k+".name", "%s is not a valid service name (letters, digits, _ . @ -)", quote(s.Name))
		default:
			if j, dup := seen[s.Name]; dup {
				add(k+".name", "service %s is defined twice (first as service %d)", quote(s.Name), j+1)
			}
			seen[s.Name] = i
		}
		if len(s.Exec) == 0 || s.Exec[0] == "" {
			add(k, "service %s: exec is required (e.g. exec = [\"/bin/web\", \"-v\"])", quote(s.Name))
		} else if !path.IsAbs(s.Exec[0]) {
			add(k+".exec", "service %s: %s must be an absolute path", quote(s.Name), quote(s.Exec[0]))
		}
		for _, e := range s.Env {
			name, _, ok := strings.Cut(e, "=")
			if !ok || !isEnvName(name) {
				add(k+".env", "service %s: %s is not NAME=value", quote(s.Name), quote(e))
			}
		}
		switch s.Restart {
		case RestartAlways, RestartOnFailure, RestartNever, RestartOnAbnormal, RestartOnWatchdog:
		default:
			add(k+".restart", "service %s: %s is not a restart policy (always, on-failure, on-abnormal, on-watchdog or never)", quote(s.Name), quote(s.Restart))
		}
		switch {
		case s.Type != TypeSimple: // validateType
		case s.Ready == ReadyStarted, s.Ready == ReadyNotify:
		default:
			add(k+".ready", "service %s: %s is not a readiness kind (started or notify)", quote(s.Name), quote(s.Ready))
		}
		ps = append(ps, validateType(k, s)...)
	}
	for i, s := range c.Service {
		k := fmt.Sprintf("service[%d]", i)
		if _, ok := SignalByName(s.StopSignal); !ok {
			add(k+".stop_signal", "service %s: %s is not a signal name (e.g. SIGTERM, SIGINT, SIGQUIT)", quote(s.Name), quote(s.StopSignal))
		}
		if s.RestartLimit < 0 {
			add(k+".restart_limit", "service %s: %d is negative", quote(s.Name), s.RestartLimit)
		}
		if s.RestartDelayMax.Duration < s.RestartDelay.Duration {
			add(k+".restart_delay_max", "service %s: %s is less than restart_delay %s", quote(s.Name), s.RestartDelayMax, s.RestartDelay)
		}
		if s.MemoryMax != "" && !isMemoryMax(s.MemoryMax) {
			add(k+".memory_max", "service %s: %s is not a size (e.g. \"64M\", \"1G\", \"max\")", quote(s.Name), quote(s.MemoryMax))
		}
		if s.PidsMax < 0 {
			add(k+".pids_max", "service %s: %d is negative", quote(s.Name), s.PidsMax)
		}
		if s.FDStoreMax < 0 || s.FDStoreMax > 1024 {
			add(k+".fdstore_max", "service %s: %d is out of range (0-1024)", quote(s.Name), s.FDStoreMax)
		}
		if s.KeepConnections && s.Type != TypeSimple {
			add(k+".keep_connections", "service %s: a %s service cannot hand its connections over (only simple ones use the handoff channel)", quote(s.Name), s.Type)
		}
		names := map[string]bool{}
		for j, so := range s.Socket {
			sk := fmt.Sprintf("%s.socket[%d]", k, j)
			if _, err := ParseListen(so.Listen); err != nil {
				add(sk+".listen", "service %s: %v", quote(s.Name), err)
			}
			if names[so.Name] {
				add(sk+".name", "service %s: two sockets named %s", quote(s.Name), quote(so.Name))
			}
			if strings.ContainsAny(so.Name, ": \n") {
				add(sk+".name", "service %s: socket name %s may not contain ':', spaces or newlines (LISTEN_FDNAMES)", quote(s.Name), quote(so.Name))
			}
			names[so.Name] = true
			if _, err := strconv.ParseUint(so.Mode, 8, 32); err != nil {
				add(sk+".mode", "service %s: %s is not an octal file mode", quote(s.Name), quote(so.Mode))
			}
			if so.Backlog < 0 {
				add(sk+".backlog", "service %s: %d is negative", quote(s.Name), so.Backlog)
			}
		}
		if s.Group != "" && s.User == "" {
			add(k+".group", "service %s: group without user (set user too)", quote(s.Name))
		}
		ps = append(ps, validateFiles(k, s)...)
		ps = append(ps, validateConflicts(k, s)...)
		for _, kd := range []struct {
			key  string
			deps []string
		}{{"after", s.After}, {"requires", s.Requires}, {"wants", s.Wants}, {"conflicts", s.Conflicts}} {
			key := kd.key
			for _, a := range kd.deps {
				if _, ok := seen[a]; !ok {
					verb := "is ordered after"
					if key == "conflicts" {
						verb = "conflicts with"
					}
					add(k+"."+key, "service %s %s %s, which is not defined", quote(s.Name), verb, quote(a))
				} else if a == s.Name {
					add(k+"."+key, "service %s depends on itself", quote(s.Name))
				}
			}
		}
	}
	if c.Control.MaxHandshakes < 0 {
		add("control.max_handshakes", "%d is negative", c.Control.MaxHandshakes)
	}
	if c.Control.MaxConnections < 0 {
		add("control.max_connections", "%d is negative", c.Control.MaxConnections)
	}
	if c.Control.Remote != "" {
		if _, _, err := net.SplitHostPort(c.Control.Remote); err != nil {
			add("control.remote", "%s is not host:port (e.g. \"0.0.0.0:7000\")", quote(c.Control.Remote))
		}
	}
	if len(ps) == 0 {
		if cycle := c.findCycle(); cycle != nil {
			add("", "dependency cycle: %s", strings.Join(cycle, " → "))
		}
	}
	return ps
}

// StartOrder returns the services so that each comes after everything in its After list.
// Ties keep config order. The config must be valid (no cycle).
func (c *Config) StartOrder() []Service {
	var out []Service
	done := map[string]bool{}
	var visit func(s Service)
	byName := c.servicesByName()
	visit = func(s Service) {
		if done[s.Name] {
			return
		}
		done[s.Name] = true
		for _, a := range s.Deps() {
			visit(byName[a])
		}
		out = append(out, s)
	}
	for _, s := range c.Service {
		visit(s)
	}
	return out
}

func (c *Config) servicesByName() map[string]Service {
	m := make(map[string]Service, len(c.Service))
	for _, s := range c.Service {
		m[s.Name] = s
	}
	return m
}

// findCycle returns the services of one dependency cycle, first repeated at the end, or nil.
func (c *Config) findCycle() []string {
	byName := c.servicesByName()
	const (
		unseen = iota
		onStack
		finished
	)
	state := map[string]int{}
	var stack []string
	var visit func(name string) []string
	visit = func(name string) []string {
		state[name] = onStack
		stack = append(stack, name)
		after := byName[name].Deps()
		sort.Strings(after)
		for _, a := range after {
			switch state[a] {
			case onStack:
				for i, n := range stack {
					if n == a {
						return append(append([]string(nil), stack[i:]...), a)
					}
				}
			case unseen:
				if cyc := visit(a); cyc != nil {
					return cyc
				}
			}
		}
		stack = stack[:len(stack)-1]
		state[name] = finished
		return nil
	}
	for _, s := range c.Service {
		if state[s.Name] == unseen {
			if cyc := visit(s.Name); cyc != nil {
				return cyc
			}
		}
	}
	return nil
}

// nulBytes finds NUL bytes in the strings of s that reach execve, chdir, bind or the passwd
// lookup: the kernel cuts them there, so they pass validation and fail at every start.
func nulBytes(k string, s Service) []problem {
	var ps []problem
	check := func(key, what, v string) {
		if strings.IndexByte(v, 0) >= 0 {
			ps = append(ps, problem{key: key, msg: fmt.Sprintf("service %s: %s %s contains a NUL byte", quote(s.Name), what, quote(v))})
		}
	}
	for _, a := range s.Exec {
		check(k+".exec", "exec argument", a)
	}
	for _, e := range s.Env {
		check(k+".env", "env entry", e)
	}
	check(k+".dir", "dir", s.Dir)
	check(k+".user", "user", s.User)
	check(k+".group", "group", s.Group)
	for j, so := range s.Socket {
		sk := fmt.Sprintf("%s.socket[%d]", k, j)
		check(sk+".owner", "socket owner", so.Owner)
		check(sk+".group", "socket group", so.Group)
	}
	return ps
}
