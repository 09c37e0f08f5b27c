package control

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/baton-init/baton/config"
	"github.com/baton-init/baton/services"
	"github.com/baton-init/baton/system"
)

// serveTwo runs the API over two services that print their lines, then idle: a with a child
// process (a tree to show), b as one process.
func serveTwo(t *testing.T, head ...string) (string, *services.Supervisor) {
	t.Helper()
	dir := t.TempDir()
	cfg, err := config.Parse("two.toml", []byte(strings.Join(head, "\n")+`
[[service]]
name = "a"
exec = ["/bin/sh", "-c", "echo a-one; echo a-two; sleep 100 & wait"]
[[service]]
name = "b"
exec = ["/bin/sh", "-c", "echo b-one; exec sleep 100"]
`))
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	sv, err := services.New(cfg, services.Options{Log: log, Reaper: reaper, RunDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	sv.StartAll()
	for name, n := range map[string]int{"a": 2, "b": 1} {
		waitLines(t, sv.Service(name), n)
	}
	srv := &Server{SV: sv, Log: log}
	sock := filepath.Join(dir, "control.sock")
	l, err := ListenLocal(sock)
	if err != nil {
		t.Fatal(err)
	}
	go srv.ServeLocal(l)
	t.Cleanup(func() { l.Close(); sv.StopAll(); sv.Close() })
	return sock, sv
}

func TestInitctlStatusSeveral(t *testing.T) {
	sock, sv := serveTwo(t)
	// a's child is sleep once the shell forked it and it exec'd, b is sleep once it exec'd:
	// nothing to wait on but /proc.
	a, b := sv.Service("a"), sv.Service("b")
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		tree, bp := a.Processes().Tree, b.Processes()
		if len(tree) == 2 && tree[1].Cmdline == "sleep 100" && strings.Join(bp.Cmdline, " ") == "sleep 100" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a's processes: %+v, b's: %+v; want a's shell and its sleep, b's sleep", tree, bp.Tree)
		}
	}
	out, code := initctlRun(sock, "status", "a", "b")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, out)
	}
	apid, bpid := sv.Status("a").Pid, sv.Status("b").Pid
	for _, want := range []string{
		`service:\s+a\n`, `service:\s+b\n`,
		`command:\s+/bin/sh -c echo a-one; echo a-two; sleep 100 & wait\n`, `command:\s+sleep 100\n`,
		`memory:\s+[0-9.]+[KMG]?B? \(`,
		`processes:\n  ` + itoa(apid) + ` /bin/sh -c .* \(main\)\n    └─\d+ sleep 100\n`,
		`processes:\n  ` + itoa(bpid) + ` sleep 100 \(main\)\n`,
		`last lines:\n  \S+ a-one\n  \S+ a-two\n`, `last lines:\n  \S+ b-one\n`,
	} {
		if !regexp.MustCompile(want).MatchString(out) {
			t.Errorf("no %q in:\n%s", want, out)
		}
	}
	if out, code := initctlRun(sock, "status", "a", "nope"); code != ExitUnknown || !strings.Contains(out, `unknown service "nope"`) {
		t.Errorf("status a nope: exit %d, %s; want 3 naming nope", code, out)
	}
}

func TestInitctlLogsMerged(t *testing.T) {
	sock, _ := serveTwo(t)
	out, code := initctlRun(sock, "logs", "--json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, out)
	}
	var got []ServiceLogLine
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var l ServiceLogLine
		if err := json.Unmarshal([]byte(line), &l); err != nil {
			t.Fatalf("%q: %v", line, err)
		}
		got = append(got, l)
	}
	texts := map[string]string{}
	for i, l := range got {
		texts[l.Text] = l.Service
		if i > 0 && l.Time.Before(got[i-1].Time) {
			t.Errorf("line %d (%s) is older than the one before: not merged by time", i, l.Text)
		}
	}
	if texts["a-one"] != "a" || texts["a-two"] != "a" || texts["b-one"] != "b" || len(got) != 3 {
		t.Errorf("lines %+v; want a-one, a-two (a) and b-one (b)", got)
	}
	for _, tc := range []struct {
		args []string
		want string // the whole output, times stripped
	}{
		{[]string{"logs", "-u", "b"}, "b-one"},                  // one service: as initctl logs b
		{[]string{"logs", "-u", "b", "-u", "a", "-n", "1"}, ""}, // the last of the merged lines (checked below)
		{[]string{"logs", "--since", "1h"}, ""},
		{[]string{"logs", "--since", time.Now().Add(time.Minute).Format(time.RFC3339)}, ""},
	} {
		out, code := initctlRun(sock, tc.args...)
		if code != 0 {
			t.Errorf("%v: exit %d: %s", tc.args, code, out)
			continue
		}
		stripped := regexp.MustCompile(`(?m)^\S+ `).ReplaceAllString(strings.TrimSpace(out), "")
		switch {
		case tc.args[len(tc.args)-1] == "1": // -n 1
			last := got[len(got)-1]
			if stripped != last.Service+": "+last.Text {
				t.Errorf("%v: %q; want the last merged line %s: %s", tc.args, stripped, last.Service, last.Text)
			}
		case tc.args[1] == "--since" && tc.args[2] == "1h":
			if n := len(strings.Split(stripped, "\n")); n != 3 || !strings.Contains(stripped, "a: a-one") || !strings.Contains(stripped, "b: b-one") {
				t.Errorf("%v: %q; want all 3 lines, each with its service", tc.args, stripped)
			}
		case tc.args[1] == "--since":
			if stripped != "" {
				t.Errorf("%v: %q; want no line (since is in the future)", tc.args, stripped)
			}
		default:
			if stripped != tc.want {
				t.Errorf("%v: %q; want %q", tc.args, stripped, tc.want)
			}
		}
	}
	if out, code := initctlRun(sock, "logs", "--since", "last tuesday"); code != ExitFailed || !strings.Contains(out, `since="last tuesday"`) {
		t.Errorf("bad --since: exit %d, %s; want 1 and the value named", code, out)
	}
	if out, code := initctlRun(sock, "logs", "-f", "-u", "a", "-u", "b"); code != ExitUsage {
		t.Errorf("logs -f of two: exit %d, %s; want usage", code, out)
	}
}

func TestParseSince(t *testing.T) {
	now := time.Date(2026, 3, 4, 10, 30, 0, 0, time.UTC)
	for _, tc := range []struct {
		in   string
		want time.Time
	}{
		{"10m", now.Add(-10 * time.Minute)},
		{"-1h", now.Add(-time.Hour)},
		{"2h ago", now.Add(-2 * time.Hour)},
		{"today", time.Date(2026, 3, 4, 0, 0, 0, 0, time.UTC)},
		{"yesterday", time.Date(2026, 3, 3, 0, 0, 0, 0, time.UTC)},
		{"09:15", time.Date(2026, 3, 4, 9, 15, 0, 0, time.UTC)},
		{"2026-03-01 08:00:05", time.Date(2026, 3, 1, 8, 0, 5, 0, time.UTC)},
		{"2026-03-01T08:00:05Z", time.Date(2026, 3, 1, 8, 0, 5, 0, time.UTC)},
	} {
		got, err := ParseSince(tc.in, now)
		if err != nil || !got.Equal(tc.want) {
			t.Errorf("ParseSince(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
	if _, err := ParseSince("soon", now); err == nil {
		t.Error("ParseSince(soon): no error")
	}
}

func TestMergeLogsKeepsEachServiceInOrder(t *testing.T) {
	t0 := time.Now()
	in := []ServiceLogLine{
		{Service: "a", LogLine: services.LogLine{Time: t0, Text: "a1"}},
		{Service: "a", LogLine: services.LogLine{Time: t0.Add(2), Text: "a2"}},
		{Service: "a", LogLine: services.LogLine{Time: t0.Add(2), Text: "a3"}},
		{Service: "b", LogLine: services.LogLine{Time: t0.Add(1), Text: "b1"}},
		{Service: "b", LogLine: services.LogLine{Time: t0.Add(3), Text: "b2"}},
	}
	var got []string
	for _, l := range MergeLogs(in) {
		got = append(got, l.Text)
	}
	if strings.Join(got, " ") != "a1 b1 a2 a3 b2" {
		t.Errorf("merged %v; want a1 b1 a2 a3 b2", got)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

func TestInitctlLogsEarlierBoot(t *testing.T) {
	logDir := t.TempDir()
	prev := filepath.Join(logDir, "boots", "000001-0123456789abcdef")
	os.MkdirAll(prev, 0o755)
	os.WriteFile(filepath.Join(prev, "a.log"), []byte(`{"time":"2026-01-01T10:00:00Z","stream":"stdout","text":"a before the reboot"}`+"\n"), 0o644)
	os.WriteFile(filepath.Join(prev, "b.log"), []byte(`{"time":"2026-01-01T10:00:01Z","stream":"stderr","text":"b before the reboot"}`+"\n"), 0o644)
	sock, _ := serveTwo(t, "[log]", fmt.Sprintf("dir = %q", logDir))
	out, code := initctlRun(sock, "logs", "--boot", "-1")
	if code != 0 || !regexp.MustCompile(`\S+ a: a before the reboot\n\S+ b: b before the reboot\n$`).MatchString(out) {
		t.Errorf("logs --boot -1: exit %d:\n%s; want both services' lines of the boot before", code, out)
	}
	if out, code := initctlRun(sock, "logs", "--boot", "-1", "-u", "b"); code != 0 || !strings.HasSuffix(out, " b before the reboot\n") || strings.Contains(out, "a before") {
		t.Errorf("logs --boot -1 -u b: exit %d: %s", code, out)
	}
	if out, code := initctlRun(sock, "logs", "--boot", "-2"); code != ExitFailed || !strings.Contains(out, "no journal for boot -2") {
		t.Errorf("logs --boot -2: exit %d: %s; want 1 naming the boot", code, out)
	}
	sockNoJournal, _ := serveTwo(t)
	if out, code := initctlRun(sockNoJournal, "logs", "--boot", "-1"); code != ExitFailed || !strings.Contains(out, "[log] dir is not set") {
		t.Errorf("logs --boot -1 without a journal: exit %d: %s", code, out)
	}
}

func TestInitctlLogsKernel(t *testing.T) {
	before, err := system.ReadKmsg()
	if err != nil || len(before) == 0 {
		t.Skipf("the kernel's ring buffer is not readable here (%v, %d lines)", err, len(before))
	}
	sock, _ := serveTwo(t)
	out, code := initctlRun(sock, "logs", "--kernel", "-n", "0")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, out)
	}
	found := false
	for _, l := range before[max(0, len(before)-5):] {
		found = found || strings.Contains(out, " "+system.EscapeControls(l.Text)+"\n")
	}
	if !found {
		t.Errorf("logs --kernel has none of the ring's last lines %v", before[max(0, len(before)-5):])
	}
	if out, code := initctlRun(sock, "logs", "--kernel", "a"); code != ExitUsage {
		t.Errorf("logs --kernel a: exit %d: %s; want usage", code, out)
	}
}

// waitLines waits until s kept n lines.
func waitLines(t *testing.T, s *services.Service, n int) {
	t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		lines, changed := s.Logs.Since(0)
		if len(lines) >= n {
			return
		}
		select {
		case <-changed:
		case <-timeout:
			t.Fatalf("%s printed %d lines; want %d", s.Spec().Name, len(lines), n)
		}
	}
}
