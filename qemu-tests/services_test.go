package qemutests

import (
	"encoding/json"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// serviceStatus is what these checks read of initctl status --json.
type serviceStatus struct {
	Name, State string
	LastExit    string `json:"last_exit"`
	Pid         int
	Completed   bool
	StartedAt   time.Time `json:"started_at"`
	ReadyAt     time.Time `json:"ready_at"`
}

func statusOf(t *testing.T, vm *VM, names ...string) []serviceStatus {
	t.Helper()
	out, code := vm.Initctl(t, append(append([]string{"status"}, names...), "--json")...)
	var list []serviceStatus
	if len(names) == 1 {
		list = make([]serviceStatus, 1)
		err := json.Unmarshal([]byte(out), &list[0])
		if code != 0 || err != nil {
			t.Fatalf("status %s --json: exit %d, %v\n%s", names[0], code, err, out)
		}
		return list
	}
	if err := json.Unmarshal([]byte(out), &list); code != 0 || err != nil || len(list) != len(names) {
		t.Fatalf("status %v --json: exit %d, %v\n%s", names, code, err, out)
	}
	return list
}

// oneshotBeforeWeb checks the appliance's setup service (type = "oneshot", remain_after_exit):
// it ran to completion, did its work, shows as running with no process, and web, ordered after
// it, was started only once it was done.
func oneshotBeforeWeb(t *testing.T, vm *VM) {
	st := statusOf(t, vm, "setup", "web")
	setup, web := st[0], st[1]
	if setup.State != "running" || setup.Pid != 0 || !setup.Completed || setup.LastExit != "exited with status 0" {
		t.Errorf("setup: %+v; want running with no process (remain_after_exit), completed, exited with status 0", setup)
	}
	var f struct {
		Exists  bool
		Content string
	}
	mustJSON(t, vm.Get(t, testPort, "/file?path=/run/setup-done"), &f)
	if !f.Exists || f.Content == "" {
		t.Errorf("/run/setup-done: exists %v, content %q; setup did not do its work", f.Exists, f.Content)
	}
	if setup.ReadyAt.IsZero() || web.StartedAt.IsZero() || !web.StartedAt.After(setup.ReadyAt) {
		t.Errorf("web started at %s, setup done at %s: web must start after setup is done",
			web.StartedAt.Format(time.RFC3339Nano), setup.ReadyAt.Format(time.RFC3339Nano))
	}
}

// reloadAddsService rewrites the guest's baton.toml with one more service, runs initctl
// reload-config, and checks the service was added and runs, while web keeps its process.
func reloadAddsService(t *testing.T, vm *VM) {
	web := statusOf(t, vm, "web")[0]
	const path = "/etc/baton/baton.toml"
	var f struct {
		Exists  bool
		Content string
	}
	mustJSON(t, vm.Get(t, testPort, "/file?path="+path), &f)
	if !f.Exists || !strings.Contains(f.Content, `name = "web"`) {
		t.Fatalf("%s in the guest: exists %v, content %q", path, f.Exists, f.Content)
	}
	putFile(t, vm, path, f.Content+"\n[[service]]\nname = \"extra\"\nexec = [\"/bin/testsvc\", \"-addr\", \":82\"]\n")

	out, code := vm.Initctl(t, "reload-config")
	if code != 0 || !regexp.MustCompile(`(?m)^started \(added\): extra$`).MatchString(out) ||
		!regexp.MustCompile(`(?m)^unchanged: .*\bweb\b`).MatchString(out) {
		t.Errorf("reload-config: exit %d, want extra started (added) and web unchanged:\n%s", code, out)
	}
	extra := statusOf(t, vm, "extra")[0]
	if extra.State != "running" || extra.Pid == 0 {
		t.Errorf("extra after reload-config: %+v; want running", extra)
	} else {
		var p struct {
			State string
			Ppid  int
		}
		mustJSON(t, vm.Get(t, testPort, "/proc/"+strconv.Itoa(extra.Pid)), &p)
		if p.State == "gone" || p.State == "Z" || p.Ppid != 1 {
			t.Errorf("extra's pid %d in the guest: state %s, parent %d; want a live child of PID 1", extra.Pid, p.State, p.Ppid)
		}
	}
	if now := statusOf(t, vm, "web")[0]; now.Pid != web.Pid || now.State != "running" {
		t.Errorf("web after reload-config: pid %d (%s), was %d: an unchanged service must keep its process", now.Pid, now.State, web.Pid)
	}
	if body := vm.Get(t, webPort, "/"); !strings.Contains(body, " pid "+strconv.Itoa(web.Pid)+" ") {
		t.Errorf("web answers %q, not from its pid %d", body, web.Pid)
	}
}

// putFile writes a file in the guest through testsvc.
func putFile(t *testing.T, vm *VM, path, content string) {
	t.Helper()
	req, _ := http.NewRequest("PUT", vm.URL(testPort, "/file?path="+path), strings.NewReader(content))
	resp, err := (&http.Client{Timeout: time.Minute}).Do(req)
	if err != nil {
		t.Fatalf("PUT %s: %v", path, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("PUT %s: %s", path, resp.Status)
	}
}
