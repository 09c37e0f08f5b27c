package qemutests

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	qvm "github.com/baton-init/baton/qemu-tests/vm"
)

// TestQEMUControl drives the booted appliance from the host with initctl: list, restart a
// service, read its logs and the boot timeline, then power off.
func TestQEMUControl(t *testing.T) {
	t.Parallel()
	vmlinuz, modules := kernel(t, "amd64")
	initrd, disk := testImage(t, modules)
	vm := Boot(t, BootOptions{Kernel: vmlinuz, Initrd: initrd, Disk: disk, Forward: []int{webPort, controlPort, streamPort}})
	vm.WaitFor(`baton: all services started`, bootTimeout)
	vm.Get(t, webPort, "/") // the forward is up and web answers

	out, code := vm.Initctl(t, "status")
	if code != 0 || !regexp.MustCompile(`(?m)^web\s+running\s+\d+`).MatchString(out) || !regexp.MustCompile(`(?m)^testsvc\s+running`).MatchString(out) {
		t.Fatalf("status: %d\n%s", code, out)
	}
	var before struct {
		Pid    int
		Cgroup string
		Status string
	}
	out, _ = vm.Initctl(t, "status", "web", "--json")
	if err := json.Unmarshal([]byte(out), &before); err != nil {
		t.Fatalf("status --json: %v", err)
	}
	if before.Cgroup != "/sys/fs/cgroup/baton/web" || before.Status != "serving on 0.0.0.0:80" {
		t.Errorf("web: cgroup %q, status %q", before.Cgroup, before.Status)
	}

	start := time.Now()
	out, code = vm.Initctl(t, "restart", "web")
	t.Logf("initctl restart web returned after %v (ready again)", time.Since(start))
	if code != 0 || !strings.Contains(out, "web: running in") {
		t.Fatalf("restart: %d %s", code, out)
	}
	body := vm.Get(t, webPort, "/")
	if strings.Contains(body, " pid "+strconv.Itoa(before.Pid)+" ") {
		t.Errorf("web still answers from the old pid %d: %q", before.Pid, body)
	}

	vm.Run(t, "upgrade under load", func(t *testing.T) { upgradeUnderLoad(t, vm) })

	out, code = vm.Initctl(t, "logs", "web")
	if code != 0 || strings.Count(out, "serving on") != 3 {
		t.Errorf("logs: %d, want three 'serving' lines (first start, restart, upgrade):\n%s", code, out)
	}
	out, code = vm.Initctl(t, "analyze")
	for _, want := range []string{"kernel ", "load kernel modules", "start service web", "WAITED FOR"} {
		if code != 0 || !strings.Contains(out, want) {
			t.Errorf("analyze lacks %q:\n%s", want, out)
		}
	}
	if out, code = vm.Initctl(t, "restart", "nope"); code != 3 {
		t.Errorf("restart nope: exit %d, want 3 (unknown service)\n%s", code, out)
	}

	if out, code = vm.Initctl(t, "poweroff"); code != 0 {
		t.Fatalf("poweroff: %d %s", code, out)
	}
	vm.WaitFor(`shutdown complete action=poweroff`, 30*time.Second)
	if code := vm.WaitExit(30 * time.Second); code != 0 {
		t.Errorf("QEMU exited %d after initctl poweroff, want 0", code)
	}
}

// upgradeUnderLoad upgrades web and stream inside the guest while the host keeps requesting web
// (a new connection every 10 ms, the shared poller) and holds a stream connection: nothing may
// fail, and the stream connection must keep its count across the upgrade.
func upgradeUnderLoad(t *testing.T, vm *VM) {
	p := vm.Poll(webPort, qvm.PollOptions{})
	defer p.End()
	conn, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(vm.HostPort(streamPort)))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	r := bufio.NewReader(conn)
	say := func(n int) {
		t.Helper()
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		fmt.Fprintf(conn, "hello %d\n", n)
		got, err := r.ReadString('\n')
		if want := fmt.Sprintf("%d: hello %d\n", n, n); err != nil || got != want {
			t.Fatalf("stream line %d: got %q (%v), want %q", n, got, err, want)
		}
	}
	say(1)
	say(2)
	for _, svc := range []string{"web", "stream"} {
		if out, code := vm.Initctl(t, "upgrade", svc); code != 0 || !strings.Contains(out, "upgraded pid") {
			t.Errorf("upgrade %s: %d %s", svc, code, out)
		}
	}
	say(3) // same connection, now served by the new stream process, count intact
	res := p.End()
	t.Logf("poller during the upgrades: %s", res)
	if len(res.Failed) != 0 {
		t.Errorf("web failed requests during the upgrades: %s", res)
	}
	if res.Answers < 10 {
		t.Errorf("only %d answers during the upgrades: the check means little (%s)", res.Answers, res)
	}
}
