// Package config reads baton's appliance configuration, /etc/baton/baton.toml.
//
// Decoding is strict: a key baton does not know is an error, because a misspelt key that is
// silently ignored ("restrat = always") is a service that is not restarted in production.
// Every error names the file, the line and the key or value at fault.
package config

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/pelletier/go-toml/v2"
)

// DefaultPath is where the appliance image keeps its configuration.
const DefaultPath = "/etc/baton/baton.toml"

// Config is the whole appliance: identity, boot, network and services.
type Config struct {
	Hostname string    `toml:"hostname"`
	Boot     Boot      `toml:"boot"`
	Network  []Network `toml:"network"`
	Mount    []Mount   `toml:"mount"`
	Control  Control   `toml:"control"`
	Kexec    Kexec     `toml:"kexec"`
	Update   Update    `toml:"update"`
	Watchdog Watchdog  `toml:"watchdog"`
	Log      Log       `toml:"log"`
	Service  []Service `toml:"service"`
}

// Watchdog is the hardware watchdog PID 1 pets, so that a kernel that hangs (a trial boot
// after initctl update above all) ends in a firmware reset.
type Watchdog struct {
	Device string `toml:"device"` // e.g. /dev/watchdog; "" for none
	// Timeout: the machine resets this long after the last pet (whole seconds; default 30s).
	Timeout Duration `toml:"timeout"`
}

// DefaultWatchdogTimeout is [watchdog] timeout's default.
const DefaultWatchdogTimeout = 30 * time.Second

// Update configures initctl update.
type Update struct {
	// ConfirmTimeout: an update is confirmed when every service meant to run is ready within
	// this long after it is applied (after the new boot, on the kexec path); else undone.
	ConfirmTimeout Duration `toml:"confirm_timeout"`
	// TrustedKeys: when set, only images whose manifest is signed by one of these keys
	// ("ed25519:BASE64", printed by mkimage -gen-key) are accepted, and only with the kernel
	// the manifest names.
	TrustedKeys []string `toml:"trusted_keys"`
}

// DefaultConfirmTimeout is [update] confirm_timeout's default.
const DefaultConfirmTimeout = 60 * time.Second

// Mount is a file system mounted after the kernel modules are loaded.
type Mount struct {
	Source  string `toml:"source"`  // /dev/…, LABEL=…, or PARTLABEL=… (GPT partition name)
	Target  string `toml:"target"`  // absolute path, created if missing
	Type    string `toml:"type"`    // vfat, ext4, …
	Options string `toml:"options"` // comma-separated: ro, rw, noexec, nosuid, nodev, noatime, nofail; others go to the file system
	// Wait is how long to wait for the device to appear (default 5s).
	Wait Duration `toml:"wait"`
}

// Kexec holds the defaults of initctl kexec.
type Kexec struct {
	Kernel  string `toml:"kernel"`  // e.g. /boot/vmlinuz
	Initrd  string `toml:"initrd"`  // e.g. /boot/initramfs.img; "" for none
	Cmdline string `toml:"cmdline"` // "reuse" (default): the running kernel's, without one-shot parameters
	Append  string `toml:"append"`  // added to the command line
	// Method: "fast" (default; kexec_load of the kernel decompressed by baton, falling back to
	// "file" when refused) or "file" (kexec_file_load).
	Method string `toml:"method"`
	// SpareOldCode: "auto" (default: only under QEMU's TCG), "yes" or "no". With it, the fast
	// method's next kernel is not given the pages that hold the running system's code (the
	// kernel's text and init text, the programs' resident code): under TCG, writing over a page
	// that held translated code is slow, and the next boot did it all over its memory.
	SpareOldCode string `toml:"spare_old_code"`
}

// Control configures the control API. The local socket always exists; the remote listener
// (same routes, mutual TLS) only when Remote is set.
type Control struct {
	Remote string `toml:"remote"`  // host:port, e.g. "0.0.0.0:7000"
	TLSDir string `toml:"tls_dir"` // ca.pem, server.pem, server-key.pem
	// MaxHandshakes bounds remote connections that have not completed the TLS handshake
	// (default 64), MaxConnections remote connections in all (default 256).
	MaxHandshakes  int `toml:"max_handshakes"`
	MaxConnections int `toml:"max_connections"`
}

// DefaultTLSDir is where the image builder puts the remote API's certificates.
const DefaultTLSDir = "/etc/baton/tls"

// Boot holds what PID 1 does before services start.
type Boot struct {
	// Modules are loaded (with their dependencies) before devices are matched to drivers.
	// The image builder resolves the dependencies at build time.
	Modules []string `toml:"modules"`
}

// Network is one statically configured interface.
type Network struct {
	Interface string `toml:"interface"`
	Address   string `toml:"address"` // CIDR, e.g. 10.0.2.15/24, or "dhcp"
	Gateway   string `toml:"gateway"` // optional default route
	MTU       int    `toml:"mtu"`     // optional
}

// Restart policies.
const (
	RestartAlways    = "always"
	RestartOnFailure = "on-failure"
	RestartNever     = "never"
	// RestartOnAbnormal: after a signal, a start timeout or the watchdog, not an exit status.
	RestartOnAbnormal = "on-abnormal"
	RestartOnWatchdog = "on-watchdog" // only after the watchdog fired
)

// Kill modes (systemd's KillMode=): who gets the stop signal.
const (
	KillControlGroup = "control-group" // every process of the service
	KillMixed        = "mixed"         // the main process; the rest SIGKILL once it ended or at stop_timeout
)

// Readiness kinds.
const (
	ReadyStarted = "started"
	ReadyNotify  = "notify"
)

// Service types (systemd's Type=): how a started process becomes a running service.
const (
	TypeSimple  = "simple"  // the started process is the service; ready as ready says
	TypeForking = "forking" // ready once the started process exited 0 and pid_file names its daemon
	TypeOneshot = "oneshot" // a task: done (or, with remain_after_exit, running) once it exited 0
)

// Service is one supervised program.
type Service struct {
	Name  string   `toml:"name"`
	Exec  []string `toml:"exec"`
	Env   []string `toml:"env"`
	Dir   string   `toml:"dir"`
	User  string   `toml:"user"`  // name or numeric uid; empty: root
	Group string   `toml:"group"` // name or numeric gid; empty: the user's primary group

	// EnvironmentFile: KEY=value files read at each start, after env (their values win); a
	// "-" prefix makes a missing file no error.
	EnvironmentFile []string `toml:"environment_file"`
	// Set between fork and exec by the baton-exec shim: file mode mask (octal), supplementary
	// groups (names or gids), resource limits ("N", "soft:hard" or "infinity") and
	// PR_SET_NO_NEW_PRIVS.
	UMask               string   `toml:"umask"`
	SupplementaryGroups []string `toml:"supplementary_groups"`
	LimitNOFILE         string   `toml:"limit_nofile"`
	LimitNPROC          string   `toml:"limit_nproc"`
	LimitCORE           string   `toml:"limit_core"`
	NoNewPrivileges     bool     `toml:"no_new_privileges"`
	// Capabilities (CAP_ names) the service keeps: raised in its ambient set, so a non-root
	// user has them after exec, and the only ones left in its bounding set. nil: untouched;
	// [] drops every capability, root's included.
	Capabilities []string `toml:"capabilities"`

	// ExecStartPre run in order before each start, ExecStopPost after the service stopped
	// (or failed); each one an argv, "-" before the path to ignore its failure.
	ExecStartPre [][]string `toml:"exec_start_pre"`
	ExecStopPost [][]string `toml:"exec_stop_post"`

	Restart         string   `toml:"restart"`
	RestartDelay    Duration `toml:"restart_delay"`     // first backoff delay
	RestartDelayMax Duration `toml:"restart_delay_max"` // backoff cap
	// More than RestartLimit failures within RestartWindow mark the service failed.
	RestartLimit  int      `toml:"restart_limit"`
	RestartWindow Duration `toml:"restart_window"`

	// Type is simple (default), forking or oneshot; Ready applies to simple only.
	Type string `toml:"type"`
	// PIDFile (forking): where the daemon writes its pid; that process is the main one.
	PIDFile string `toml:"pid_file"`
	// RemainAfterExit (oneshot): once it exited 0 the service stays running, with no process.
	RemainAfterExit bool `toml:"remain_after_exit"`

	Ready        string   `toml:"ready"`
	StartTimeout Duration `toml:"start_timeout"` // ready = "notify", forking's pid file, oneshot's run

	After    []string `toml:"after"`    // start after these (if they are configured)
	Requires []string `toml:"requires"` // start after these, and only if they are up
	// Wants: start after these and start them too, but start anyway if they fail.
	Wants []string `toml:"wants"`
	// Conflicts: starting this one stops those, and starting one of those stops this one.
	Conflicts []string `toml:"conflicts"`
	// NeedsNetwork: at boot, start only once [[network]] is configured (addresses, routes, a
	// DHCP lease). Without it a service starts while the network comes up: its held sockets
	// are bound already, and clients queue in their backlog until the link is up.
	NeedsNetwork bool `toml:"needs_network"`

	StopSignal string `toml:"stop_signal"`
	// ReloadSignal is what initctl reload sends the main process (default SIGHUP).
	ReloadSignal string   `toml:"reload_signal"`
	StopTimeout  Duration `toml:"stop_timeout"`
	KillMode     string   `toml:"kill_mode"` // control-group (default) or mixed
	// WatchdogSignal is sent when the watchdog fires (default SIGABRT, so it can dump core);
	// SIGKILL follows after stop_timeout.
	WatchdogSignal string `toml:"watchdog_signal"`
	// SuccessExitStatus: exit statuses besides 0 that count as success (lighttpd's clean stop
	// exits 1). RestartPreventExitStatus: exit statuses after which it is never restarted.
	SuccessExitStatus        []int `toml:"success_exit_status"`
	RestartPreventExitStatus []int `toml:"restart_prevent_exit_status"`

	MemoryMax string `toml:"memory_max"` // cgroup memory.max, e.g. "64M" or "max"
	PidsMax   int    `toml:"pids_max"`   // cgroup pids.max

	// Watchdog: a service that sends no WATCHDOG=1 for this long is killed and counts as failed.
	Watchdog Duration `toml:"watchdog"`
	// FDStoreMax bounds the fds the service may keep in baton (FDSTORE=1); 0 disables the store.
	FDStoreMax int `toml:"fdstore_max"`
	// UpgradeTimeout bounds how long a new version has to become ready during an upgrade.
	UpgradeTimeout Duration `toml:"upgrade_timeout"`
	// UpgradeSettle is how long the new version of a ready = "started" service must stay up
	// before the old one gets its stop signal (notify services prove readiness with READY=1).
	UpgradeSettle Duration `toml:"upgrade_settle"`
	// KeepConnections: across initctl kexec, the service's established TCP connections (those
	// it hands to baton through handoff/client, as to a new version in an upgrade) are carried
	// into the next kernel with TCP_REPAIR and handed to the service it starts there.
	KeepConnections bool `toml:"keep_connections"`

	// Files are packed into the image with the service by the image builder (see File).
	Files []File `toml:"files"`
	// StateDir, RuntimeDir and LogsDir name directories under /var/lib, /run and /var/log,
	// made before each start and owned by the service's user (see Dirs).
	StateDir   string `toml:"state_dir"`
	RuntimeDir string `toml:"runtime_dir"`
	LogsDir    string `toml:"logs_dir"`

	Socket []Socket `toml:"socket"`
}

// Socket is a listening socket PID 1 binds before the service starts and holds across its
// restarts and upgrades; the service gets it through the listen-fd protocol.
type Socket struct {
	Name      string `toml:"name"`       // LISTEN_FDNAMES entry; default: the service's name
	Listen    string `toml:"listen"`     // tcp://, tcp6://, udp://, udp6://, unix://, unixgram://, unixpacket://
	Backlog   int    `toml:"backlog"`    // listen(2) backlog (default 4096)
	ReusePort bool   `toml:"reuse_port"` // SO_REUSEPORT
	V6Only    *bool  `toml:"v6only"`     // IPV6_V6ONLY for tcp6/udp6 (default: the kernel's)
	Mode      string `toml:"mode"`       // unix socket file mode, octal (default "0666")
	Owner     string `toml:"owner"`      // unix socket file owner (user name or uid)
	Group     string `toml:"group"`      // unix socket file group
}

// Deps is everything s is ordered after: After, Requires and Wants.
func (s Service) Deps() []string {
	return append(append(append([]string(nil), s.After...), s.Requires...), s.Wants...)
}

// Duration is a time.Duration written as a Go duration string ("10s", "1m30s").
type Duration struct{ time.Duration }

// UnmarshalText implements encoding.TextUnmarshaler.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("%s is not a duration (write e.g. \"10s\" or \"1m30s\")", quote(string(b)))
	}
	if v < 0 {
		return fmt.Errorf("%s is negative", quote(string(b)))
	}
	d.Duration = v
	return nil
}

// MarshalText implements encoding.TextMarshaler.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// Defaults. The stop timeout is shorter than systemd's 90 s: an appliance reboots often and
// unattended. The restart limit is systemd's (5 starts in 10 s).
const (
	DefaultStopTimeout     = 10 * time.Second
	DefaultStartTimeout    = 30 * time.Second
	DefaultRestartDelay    = 100 * time.Millisecond
	DefaultRestartDelayMax = 5 * time.Second
	DefaultRestartLimit    = 5
	DefaultRestartWindow   = 10 * time.Second
	DefaultStopSignal      = "SIGTERM"
	DefaultReloadSignal    = "SIGHUP"
	DefaultWatchdogSignal  = "SIGABRT"
	DefaultUpgradeTimeout  = 30 * time.Second
	DefaultUpgradeSettle   = time.Second
	DefaultBacklog         = 4096
)

// Error is a problem in a config file, located as precisely as the file allows.
type Error struct {
	File string
	Line int    // 0 when the problem has no single line (e.g. a dependency cycle)
	Key  string // dotted key path, e.g. service[1].restart
	Msg  string
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d", e.Line)
	}
	b.WriteString(": ")
	if e.Key != "" {
		b.WriteString(clip(e.Key)) // a key can be as long as the file
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Load reads and validates the config file at path.
func Load(path string) (*Config, error) { return LoadFor(path, Accounts{}) }

// LoadFor reads and validates the config file at path, and checks that the users and groups
// it names exist where it will run.
func LoadFor(path string, acct Accounts) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return ParseFor(path, data, acct)
}

// Accounts resolves the user and group names of a config against the passwd and group files
// of the system that will run it (PID 1: the image's; mkimage: the image being built). A nil
// function skips that check.
type Accounts struct {
	User  func(name string) error
	Group func(name string) error
}

// Parse decodes and validates data; name is used in errors.
func Parse(name string, data []byte) (*Config, error) { return ParseFor(name, data, Accounts{}) }

// ParseFor decodes and validates data and checks its users and groups with acct.
func ParseFor(name string, data []byte, acct Accounts) (*Config, error) {
	if err := unknownKeys(name, data); err != nil {
		return nil, err
	}
	var c Config
	dec := toml.NewDecoder(strings.NewReader(string(data)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return nil, decodeError(name, data, err)
	}
	c.applyDefaults()
	errs := c.validate()
	if len(errs) == 0 {
		errs = c.checkAccounts(acct)
	}
	if len(errs) > 0 {
		lines := positions(data)
		out := make([]error, 0, min(len(errs), MaxErrors)+1)
		for _, e := range errs[:min(len(errs), MaxErrors)] {
			ce := &Error{File: name, Key: e.key, Msg: e.msg, Line: lines.lineOf(e.key)}
			out = append(out, ce)
		}
		if len(errs) > MaxErrors {
			out = append(out, fmt.Errorf("%s: and %d more problems", name, len(errs)-MaxErrors))
		}
		return nil, errors.Join(out...)
	}
	return &c, nil
}

// decodeError turns go-toml's errors into Errors with file and line.
func decodeError(name string, data []byte, err error) error {
	var strict *toml.StrictMissingError
	if errors.As(err, &strict) {
		out := make([]error, 0, min(len(strict.Errors), MaxErrors)+1)
		for i := range strict.Errors[:min(len(strict.Errors), MaxErrors)] {
			de := &strict.Errors[i]
			line, _ := de.Position()
			out = append(out, &Error{File: name, Line: line, Key: strings.Join(de.Key(), "."),
				Msg: "unknown key"})
		}
		if n := len(strict.Errors) - MaxErrors; n > 0 {
			out = append(out, fmt.Errorf("%s: and %d more unknown keys", name, n))
		}
		return errors.Join(out...)
	}
	var de *toml.DecodeError
	if errors.As(err, &de) {
		line, _ := de.Position()
		msg := strings.TrimPrefix(de.Error(), "toml: ")
		return &Error{File: name, Line: line, Key: strings.Join(de.Key(), "."), Msg: clip(msg)}
	}
	return &Error{File: name, Msg: clip(strings.TrimPrefix(err.Error(), "toml: "))}
}

func (c *Config) applyDefaults() {
	if c.Control.Remote != "" && c.Control.TLSDir == "" {
		c.Control.TLSDir = DefaultTLSDir
	}
	if c.Kexec.Cmdline == "" {
		c.Kexec.Cmdline = "reuse"
	}
	if c.Watchdog.Device != "" && c.Watchdog.Timeout.Duration == 0 {
		c.Watchdog.Timeout.Duration = DefaultWatchdogTimeout
	}
	for i := range c.Mount {
		if c.Mount[i].Wait.Duration == 0 {
			c.Mount[i].Wait.Duration = 5 * time.Second
		}
	}
	for i := range c.Service {
		s := &c.Service[i]
		s.ApplyDefaults()
	}
}

// ApplyDefaults fills in every unset field with its default.
func (s *Service) ApplyDefaults() {
	setDefault := func(d *Duration, v time.Duration) {
		if d.Duration == 0 {
			d.Duration = v
		}
	}
	if s.Restart == "" {
		s.Restart = RestartOnFailure
	}
	if s.Type == "" {
		s.Type = TypeSimple
	}
	if s.Ready == "" && s.Type == TypeSimple { // set for another type, it is an error (validate)
		s.Ready = ReadyStarted
	}
	if s.StopSignal == "" {
		s.StopSignal = DefaultStopSignal
	}
	if s.ReloadSignal == "" {
		s.ReloadSignal = DefaultReloadSignal
	}
	if s.WatchdogSignal == "" {
		s.WatchdogSignal = DefaultWatchdogSignal
	}
	if s.KillMode == "" {
		s.KillMode = KillControlGroup
	}
	if s.RestartLimit == 0 {
		s.RestartLimit = DefaultRestartLimit
	}
	setDefault(&s.StopTimeout, DefaultStopTimeout)
	setDefault(&s.StartTimeout, DefaultStartTimeout)
	setDefault(&s.RestartDelay, DefaultRestartDelay)
	setDefault(&s.RestartDelayMax, DefaultRestartDelayMax)
	setDefault(&s.RestartWindow, DefaultRestartWindow)
	setDefault(&s.UpgradeTimeout, DefaultUpgradeTimeout)
	setDefault(&s.UpgradeSettle, DefaultUpgradeSettle)
	for i := range s.Socket {
		so := &s.Socket[i]
		if so.Name == "" {
			so.Name = s.Name
		}
		if so.Backlog == 0 {
			so.Backlog = DefaultBacklog
		}
		if so.Mode == "" {
			so.Mode = "0666"
		}
	}
}
