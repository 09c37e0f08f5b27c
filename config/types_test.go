package config

import (
	"reflect"
	"strings"
	"testing"
)

func TestServiceTypes(t *testing.T) {
	for _, tc := range []struct {
		name, body, want string // want "" for valid
	}{
		{"simple default", `exec = ["/bin/a"]`, ""},
		{"forking", "type = \"forking\"\nexec = [\"/usr/sbin/nginx\"]\npid_file = \"/run/nginx.pid\"", ""},
		{"oneshot", "type = \"oneshot\"\nremain_after_exit = true\nexec = [\"/bin/a\"]", ""},
		{"ready with forking", "type = \"forking\"\npid_file = \"/run/a.pid\"\nexec = [\"/bin/a\"]\nready = \"notify\"",
			`x.toml:6: service[0].ready: service "a": ready applies to type = "simple" only`},
		{"ready with oneshot", "type = \"oneshot\"\nready = \"started\"\nexec = [\"/bin/a\"]",
			`x.toml:4: service[0].ready: service "a": ready applies to type = "simple" only`},
		{"forking without pid_file", "type = \"forking\"\nexec = [\"/bin/a\"]", `needs pid_file`},
		{"relative pid_file", "type = \"forking\"\npid_file = \"a.pid\"\nexec = [\"/bin/a\"]", `x.toml:4: service[0].pid_file`},
		{"pid_file with simple", "pid_file = \"/run/a.pid\"\nexec = [\"/bin/a\"]", `pid_file applies to type = "forking" only`},
		{"remain_after_exit with simple", "remain_after_exit = true\nexec = [\"/bin/a\"]", `x.toml:3: service[0].remain_after_exit`},
		{"unknown type", "type = \"notify\"\nexec = [\"/bin/a\"]", `x.toml:3: service[0].type: service "a": "notify" is not a service type`},
		{"systemd's policies", "restart = \"on-abnormal\"\nkill_mode = \"mixed\"\nsuccess_exit_status = [1]\nrestart_prevent_exit_status = [3]\nwatchdog_signal = \"SIGKILL\"\nexec = [\"/bin/a\"]", ""},
		{"bad kill_mode", "kill_mode = \"process\"\nexec = [\"/bin/a\"]", `x.toml:3: service[0].kill_mode: service "a": "process" is not a kill mode`},
		{"bad watchdog_signal", "watchdog_signal = \"SIGNOPE\"\nexec = [\"/bin/a\"]", `x.toml:3: service[0].watchdog_signal`},
		{"bad exit status", "success_exit_status = [256]\nexec = [\"/bin/a\"]", `x.toml:3: service[0].success_exit_status: service "a": 256 is not an exit status`},
		{"exec settings", "environment_file = [\"-/etc/default/a\", \"/etc/a.env\"]\numask = \"0027\"\nsupplementary_groups = [\"4\"]\nlimit_nofile = \"1024:4096\"\nlimit_nproc = \"infinity\"\nlimit_core = \"0\"\nno_new_privileges = true\nexec = [\"/bin/a\"]", ""},
		{"bad umask", "umask = \"999\"\nexec = [\"/bin/a\"]", `x.toml:3: service[0].umask`},
		{"bad limit", "limit_nofile = \"4096:1024\"\nexec = [\"/bin/a\"]", `x.toml:3: service[0].limit_nofile: service "a": soft limit "4096:1024" above the hard one`},
		{"relative environment_file", "environment_file = [\"-a.env\"]\nexec = [\"/bin/a\"]", `x.toml:3: service[0].environment_file`},
		{"oneshot restart always", "type = \"oneshot\"\nrestart = \"always\"\nexec = [\"/bin/a\"]", `x.toml:4: service[0].restart`},
		{"capabilities", "capabilities = [\"CAP_NET_BIND_SERVICE\", \"net_raw\"]\nexec = [\"/bin/a\"]", ""},
		{"no capabilities", "capabilities = []\nexec = [\"/bin/a\"]", ""},
		{"bad capability", "capabilities = [\"CAP_NET_BIND_SERVICE\", \"CAP_FLY\"]\nexec = [\"/bin/a\"]", `x.toml:3: service[0].capabilities: service "a": "CAP_FLY" is not a capability`},
		{"pre and post", "exec_start_pre = [[\"/bin/mkdir\", \"-p\", \"/run/a\"], [\"-/bin/false\"]]\nexec_stop_post = [[\"/bin/rm\", \"-rf\", \"/run/a\"]]\nexec = [\"/bin/a\"]", ""},
		{"relative pre", "exec_start_pre = [[\"/bin/true\"], [\"-mkdir\", \"x\"]]\nexec = [\"/bin/a\"]", `x.toml:3: service[0].exec_start_pre: service "a": command 2 "-mkdir" must be an absolute path`},
		{"empty post", "exec = [\"/bin/a\"]\nexec_stop_post = [[]]", `x.toml:4: service[0].exec_stop_post: service "a": command 1 is empty`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("x.toml", []byte("[[service]]\nname = \"a\"\n"+tc.body+"\n"))
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("want valid: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("got %v; want an error with %q", err, tc.want)
			}
		})
	}
}

func TestWantsConflicts(t *testing.T) {
	for _, tc := range []struct{ name, body, want string }{
		{"valid", "[[service]]\nname = \"b\"\nexec = [\"/bin/b\"]\nwants = [\"a\"]\nconflicts = [\"c\"]\n[[service]]\nname = \"c\"\nexec = [\"/bin/c\"]\n", ""},
		{"unknown wanted", "[[service]]\nname = \"b\"\nexec = [\"/bin/b\"]\nwants = [\"nope\"]\n", `x.toml:7: service[1].wants: service "b" is ordered after "nope", which is not defined`},
		{"unknown conflict", "[[service]]\nname = \"b\"\nexec = [\"/bin/b\"]\nconflicts = [\"nope\"]\n", `x.toml:7: service[1].conflicts: service "b" conflicts with "nope", which is not defined`},
		{"wants and conflicts", "[[service]]\nname = \"b\"\nexec = [\"/bin/b\"]\nwants = [\"a\"]\nconflicts = [\"a\"]\n", `x.toml:8: service[1].conflicts: service "b" conflicts with "a" and wants it`},
		{"wants cycle", "wants = [\"b\"]\n[[service]]\nname = \"b\"\nexec = [\"/bin/b\"]\nafter = [\"a\"]\n", `dependency cycle: a → b → a`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse("x.toml", []byte("[[service]]\nname = \"a\"\nexec = [\"/bin/a\"]\n"+tc.body))
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("want valid: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("got %v; want an error with %q", err, tc.want)
			case tc.want == "":
				if got := c.ConflictsWith("c"); len(got) != 1 || got[0] != "b" {
					t.Errorf("ConflictsWith(c) = %v; want [b] (it works both ways)", got)
				}
				if order := c.StartOrder(); order[0].Name != "a" || order[1].Name != "b" {
					t.Errorf("start order %s, %s: wants orders too", order[0].Name, order[1].Name)
				}
			}
		})
	}
}

func TestParseCommand(t *testing.T) {
	c := ParseCommand([]string{"-/bin/false", "x"})
	if !c.IgnoreFailed || c.Argv[0] != "/bin/false" || c.Argv[1] != "x" {
		t.Errorf("ParseCommand(-/bin/false x) = %+v", c)
	}
	if c := ParseCommand([]string{"/bin/true"}); c.IgnoreFailed {
		t.Errorf("ParseCommand(/bin/true) ignores failure")
	}
}

func TestLogConfig(t *testing.T) {
	for _, tc := range []struct{ name, body, want string }{
		{"journal", "[log]\ndir = \"/var/log/baton\"\nmax_size = \"512K\"\nboots = 3\n", ""},
		{"relative dir", "[log]\ndir = \"log\"\n", `x.toml:2: log.dir: "log" must be an absolute path`},
		{"bad size", "[log]\ndir = \"/l\"\nmax_size = \"lots\"\n", `x.toml:3: log.max_size: "lots" is not a size`},
		{"tiny size", "[log]\ndir = \"/l\"\nmax_size = \"1K\"\n", `x.toml:3: log.max_size: "1K" is under 8K`},
		{"boots without dir", "[log]\nboots = 3\n", `log: max_size and boots need dir`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse("x.toml", []byte(tc.body))
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("want valid: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("got %v; want an error with %q", err, tc.want)
			case tc.want == "" && (c.Log.Size() != 512<<10 || c.Log.KeptBoots() != 3):
				t.Errorf("size %d, boots %d", c.Log.Size(), c.Log.KeptBoots())
			}
		})
	}
	if (Log{Dir: "/l"}).Size() != DefaultLogMaxSize || (Log{Dir: "/l"}).KeptBoots() != DefaultLogBoots {
		t.Error("defaults not applied")
	}
}

func TestHeldByConflict(t *testing.T) {
	svc := func(name string, conflicts ...string) Service { return Service{Name: name, Conflicts: conflicts} }
	for _, tc := range []struct {
		name     string
		services []Service
		want     map[string]string
	}{
		{"none", []Service{svc("a"), svc("b")}, map[string]string{}},
		{"the later names the earlier", []Service{svc("a"), svc("b", "a")}, map[string]string{"b": "a"}},
		{"the earlier names the later", []Service{svc("a", "b"), svc("b")}, map[string]string{"b": "a"}},
		{"a chain: the middle one yields", []Service{svc("a", "b"), svc("b", "c"), svc("c")}, map[string]string{"b": "a"}},
		{"one against two", []Service{svc("a"), svc("b"), svc("c", "a", "b")}, map[string]string{"c": "a"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := (&Config{Service: tc.services}).HeldByConflict()
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("HeldByConflict() = %v; want %v", got, tc.want)
			}
		})
	}
}
