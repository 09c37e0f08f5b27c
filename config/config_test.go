package config

import (
	"math/rand/v2"
	"regexp"
	"strings"
	"testing"
	"time"
)

const good = `
hostname = "demo"

[boot]
modules = ["virtio_net"]

[[network]]
interface = "eth0"
address = "10.0.2.15/24"
gateway = "10.0.2.2"

[[service]]
name = "web"
exec = ["/bin/web", "-v"]
env = ["GREETING=hello"]
after = ["db"]
stop_timeout = "3s"

[[service]]
name = "db"
exec = ["/bin/db"]
restart = "always"
`

func TestParseGood(t *testing.T) {
	c, err := Parse("baton.toml", []byte(good))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if c.Hostname != "demo" || len(c.Network) != 1 || c.Network[0].Gateway != "10.0.2.2" {
		t.Errorf("decoded %+v", c)
	}
	web := c.Service[0]
	if web.Restart != RestartOnFailure || web.Ready != ReadyStarted || web.StopTimeout.Duration != 3*time.Second {
		t.Errorf("defaults/durations not applied: %+v", web)
	}
	db := c.Service[1]
	if db.StopTimeout.Duration != DefaultStopTimeout || db.StopSignal != "SIGTERM" || db.RestartLimit != DefaultRestartLimit ||
		db.RestartDelay.Duration != DefaultRestartDelay || db.RestartDelayMax.Duration != DefaultRestartDelayMax {
		t.Errorf("defaults not applied: %+v", db)
	}
	var order []string
	for _, s := range c.StartOrder() {
		order = append(order, s.Name)
	}
	if got := strings.Join(order, ","); got != "db,web" {
		t.Errorf("start order = %s, want db,web", got)
	}
}

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		doc  string
		want []string // substrings the error must contain
	}{
		{"unknown top-level key", "hostname = \"a\"\nhostnme = \"b\"\n",
			[]string{"f.toml:2:", "hostnme", "unknown key"}},
		{"unknown service key", "[[service]]\nname = \"a\"\nexec = [\"/a\"]\nrestrat = \"always\"\n",
			[]string{"f.toml:4:", "service.restrat", "unknown key"}},
		{"syntax error", "hostname = \"a\n",
			[]string{"f.toml:1:"}},
		{"wrong type", "hostname = 3\n",
			[]string{"f.toml:1:", "hostname"}},
		{"bad duration", "[[service]]\nname = \"a\"\nexec = [\"/a\"]\nstop_timeout = \"soon\"\n",
			[]string{"f.toml:4:", "not a duration"}},
		{"bad restart policy in second service",
			"[[service]]\nname = \"a\"\nexec = [\"/a\"]\n\n[[service]]\nname = \"b\"\nexec = [\"/b\"]\nrestart = \"sometimes\"\n",
			[]string{"f.toml:8:", "service[1].restart", `"sometimes" is not a restart policy`}},
		{"relative exec", "[[service]]\nname = \"a\"\nexec = [\"bin/a\"]\n",
			[]string{"f.toml:3:", "must be an absolute path"}},
		{"missing exec", "[[service]]\nname = \"a\"\n",
			[]string{"f.toml:1:", "exec is required"}},
		{"duplicate name", "[[service]]\nname = \"a\"\nexec = [\"/a\"]\n[[service]]\nname = \"a\"\nexec = [\"/a\"]\n",
			[]string{"f.toml:5:", "defined twice"}},
		{"unknown dependency", "[[service]]\nname = \"a\"\nexec = [\"/a\"]\nafter = [\"nope\"]\n",
			[]string{"f.toml:4:", `"nope", which is not defined`}},
		{"cycle", "[[service]]\nname = \"a\"\nexec = [\"/a\"]\nafter = [\"b\"]\n[[service]]\nname = \"b\"\nexec = [\"/b\"]\nafter = [\"a\"]\n",
			[]string{"f.toml: ", "dependency cycle: a → b → a"}},
		{"bad address", "[[network]]\ninterface = \"eth0\"\naddress = \"10.0.2.15\"\n",
			[]string{"f.toml:3:", "network[0].address", "prefix length"}},
		{"bad hostname", "hostname = \"no spaces\"\n",
			[]string{"f.toml:1:", "hostname"}},
		{"bad env", "[[service]]\nname = \"a\"\nexec = [\"/a\"]\nenv = [\"NOEQUALS\"]\n",
			[]string{"f.toml:4:", "not NAME=value"}},
		{"bad stop signal", "[[service]]\nname = \"a\"\nexec = [\"/a\"]\nstop_signal = \"SIGNOPE\"\n",
			[]string{"f.toml:4:", "not a signal name"}},
		{"bad memory_max", "[[service]]\nname = \"a\"\nexec = [\"/a\"]\nmemory_max = \"lots\"\n",
			[]string{"f.toml:4:", "service[0].memory_max"}},
		{"unknown requires", "[[service]]\nname = \"a\"\nexec = [\"/a\"]\nrequires = [\"db\"]\n",
			[]string{"f.toml:4:", "service[0].requires", `"db", which is not defined`}},
		{"requires itself", "[[service]]\nname = \"a\"\nexec = [\"/a\"]\nrequires = [\"a\"]\n",
			[]string{"depends on itself"}},
		{"cycle through requires", "[[service]]\nname = \"a\"\nexec = [\"/a\"]\nrequires = [\"b\"]\n[[service]]\nname = \"b\"\nexec = [\"/b\"]\nafter = [\"a\"]\n",
			[]string{"dependency cycle: a → b → a"}},
		{"delay max below delay", "[[service]]\nname = \"a\"\nexec = [\"/a\"]\nrestart_delay = \"2s\"\nrestart_delay_max = \"1s\"\n",
			[]string{"f.toml:5:", "less than restart_delay"}},
		{"mount without type", "[[mount]]\nsource = \"LABEL=BOOT\"\ntarget = \"/boot\"\n",
			[]string{"f.toml:1:", "type is required"}},
		{"mount by uuid", "[[mount]]\nsource = \"UUID=1234\"\ntarget = \"/boot\"\ntype = \"vfat\"\n",
			[]string{"f.toml:2:", "mount[0].source"}},
		{"relative kexec kernel", "[kexec]\nkernel = \"vmlinuz\"\n",
			[]string{"f.toml:2:", "kexec.kernel"}},
		{"unknown spare_old_code", "[kexec]\nspare_old_code = \"maybe\"\n",
			[]string{"f.toml:2:", "kexec.spare_old_code", "auto, yes or no"}},
		{"trusted key not a key", "[update]\ntrusted_keys = [\"ssh-ed25519 AAAA\"]\n",
			[]string{"f.toml:2:", "update.trusted_keys", "ed25519:BASE64"}},
		{"dhcp with a gateway", "[[network]]\ninterface = \"eth0\"\naddress = \"dhcp\"\ngateway = \"10.0.2.2\"\n",
			[]string{"f.toml:4:", "comes from the lease"}},
		{"bad remote", "[control]\nremote = \"7000\"\n",
			[]string{"f.toml:2:", "control.remote"}},
		{"relative watchdog device", "[watchdog]\ndevice = \"watchdog\"\n",
			[]string{"f.toml:2:", "watchdog.device", "absolute path"}},
		{"watchdog timeout without device", "[watchdog]\ntimeout = \"10s\"\n",
			[]string{"f.toml:2:", "watchdog.timeout", "device is not"}},
		{"watchdog timeout in fractions", "[watchdog]\ndevice = \"/dev/watchdog\"\ntimeout = \"1500ms\"\n",
			[]string{"f.toml:3:", "watchdog.timeout", "whole seconds"}},
		{"watchdog timeout too short", "[watchdog]\ndevice = \"/dev/watchdog\"\ntimeout = \"1s\"\n",
			[]string{"f.toml:3:", "watchdog.timeout", "from 2s to 1h"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("f.toml", []byte(tc.doc))
			if err == nil {
				t.Fatalf("Parse accepted:\n%s", tc.doc)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestWatchdogDefaults(t *testing.T) {
	for _, tc := range []struct {
		doc  string
		want time.Duration
	}{
		{"", 0}, // no device, no watchdog
		{"[watchdog]\ndevice = \"/dev/watchdog\"\n", DefaultWatchdogTimeout},
		{"[watchdog]\ndevice = \"/dev/watchdog\"\ntimeout = \"10s\"\n", 10 * time.Second},
	} {
		c, err := Parse("f.toml", []byte(tc.doc))
		if err != nil {
			t.Fatalf("Parse(%q): %v", tc.doc, err)
		}
		if c.Watchdog.Timeout.Duration != tc.want {
			t.Errorf("Parse(%q): timeout %v, want %v", tc.doc, c.Watchdog.Timeout.Duration, tc.want)
		}
	}
}

func TestPositionsNestedArrayTables(t *testing.T) {
	doc := "[[service]]\nname = \"a\"\n[[service.socket]]\nname = \"x\"\n[[service]]\nname = \"b\"\n[[service.socket]]\nname = \"y\"\n"
	l := positions([]byte(doc))
	for key, want := range map[string]int{
		"service[0]": 1, "service[0].socket[0].name": 4, "service[1].name": 6, "service[1].socket[0]": 7,
		"service[1].socket[0].listen": 7, // absent key falls back to its table
	} {
		if got := l.lineOf(key); got != want {
			t.Errorf("lineOf(%s) = %d, want %d", key, got, want)
		}
	}
}

// The written-out name checks accept exactly what the regular expressions they replace did,
// over generated names and edge cases.
func TestNameChecksMatchTheirRegexps(t *testing.T) {
	checks := []struct {
		name string
		f    func(string) bool
		re   *regexp.Regexp
	}{
		{"service", isServiceName, regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$`)},
		{"host", isHostName, regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}))*$`)},
		{"env", isEnvName, regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)},
		{"memory", isMemoryMax, regexp.MustCompile(`^(max|[0-9]+[KMGT]?)$`)},
	}
	inputs := []string{"", "a", "_", "-", ".", "max", "maxK", "10", "10K", "K", "10KK", "1T", "10k", "web", "web-1", "-web",
		"a.b", "a..b", ".a", "a.", "a-.b", "x@y", "A_b", "_a", "9a", "a b", "é", "a\n",
		strings.Repeat("a", 63), strings.Repeat("a", 64), strings.Repeat("a", 65),
		strings.Repeat("a", 63) + "." + strings.Repeat("b", 63), strings.Repeat("a", 64) + ".b"}
	alphabet := "aZ09_.@-K "
	r := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 20000; i++ {
		b := make([]byte, r.IntN(8))
		for j := range b {
			b[j] = alphabet[r.IntN(len(alphabet))]
		}
		inputs = append(inputs, string(b))
	}
	for _, c := range checks {
		for _, in := range inputs {
			if got, want := c.f(in), c.re.MatchString(in); got != want {
				t.Errorf("%s check of %q: %v, the regexp says %v", c.name, in, got, want)
			}
		}
	}
}
