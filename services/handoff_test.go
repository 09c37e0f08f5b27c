package services

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/baton-init/baton/config"
)

func TestListenFdsProtocol(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "app.sock")
	exe, env := helperExec("listenfds")
	sv := supervisor(t, config.Service{Name: "lf", Ready: config.ReadyNotify, Exec: exe, Env: env,
		Socket: []config.Socket{{Name: "web", Listen: "tcp://127.0.0.1:0"}, {Name: "ctl", Listen: "unix://" + sock}}})
	if r := sv.StartAll(); r[0].Err != nil {
		t.Fatal(r[0].Err)
	}
	s := sv.Service("lf")
	if line := waitLog(t, s, "fds="); line != "fds=2 names=web:ctl pid_ok=true" {
		t.Errorf("service saw %q", line)
	}
	if line := waitLog(t, s, "listeners="); line != "listeners=2" {
		t.Errorf("service saw %q", line)
	}
	st := s.Status()
	if len(st.Sockets) != 2 || st.Sockets[1].Listen != "unix://"+sock {
		t.Errorf("status sockets = %+v", st.Sockets)
	}
	if fi, err := os.Stat(sock); err != nil || fi.Mode().Perm() != 0o666 {
		t.Errorf("unix socket file: %v %v", fi, err)
	}
}

func TestSocketBindFailureFailsOnlyThatService(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	sv := supervisor(t,
		config.Service{Name: "clash", Exec: sh("sleep 100"), Socket: []config.Socket{{Name: "http", Listen: "tcp://" + l.Addr().String()}}},
		config.Service{Name: "fine", Exec: sh("sleep 100")},
	)
	r := sv.StartAll()
	if r[0].Err == nil || !strings.Contains(r[0].Err.Error(), "socket http (tcp://"+l.Addr().String()+"): bind: address already in use") {
		t.Errorf("clash: %v, want the socket, its address and the cause", r[0].Err)
	}
	if r[1].Err != nil {
		t.Errorf("fine: %v", r[1].Err)
	}
}

func TestFDStoreSurvivesKill9(t *testing.T) {
	exe, env := helperExec("fdstore")
	sv := supervisor(t, config.Service{Name: "memo", Ready: config.ReadyNotify, Restart: config.RestartAlways,
		Exec: exe, Env: env, FDStoreMax: 4})
	sv.StartAll()
	s := sv.Service("memo")
	waitLog(t, s, "stored")
	if !s.WaitUntil(func(st Status) bool { return len(st.Stored) == 1 }, 5*time.Second) {
		t.Fatalf("store holds %+v", s.Status().Stored)
	}
	first := s.Status().Pid
	if err := unix.Kill(first, unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if line := waitLog(t, s, "found:"); line != fmt.Sprintf("found: stored by pid %d", first) {
		t.Errorf("after kill -9 the new process saw %q", line)
	}
	if st := s.Status(); st.Restarts != 1 || st.Stored[0].Name != "memo" || st.Stored[0].Kind != "file" {
		t.Errorf("status %+v", st)
	}
	// An explicit stop flushes the store.
	sv.Stop("memo")
	if st := s.Status(); len(st.Stored) != 0 {
		t.Errorf("store after stop: %+v", st.Stored)
	}
}

func TestUpgradeFailuresLeaveTheOldVersionServing(t *testing.T) {
	exe, env := helperExec("notify-ready")
	sv := supervisor(t, config.Service{Name: "up", Ready: config.ReadyNotify, Exec: exe, Env: env,
		UpgradeTimeout: dur(400 * time.Millisecond)})
	sv.StartAll()
	s := sv.Service("up")
	old := s.Status().Pid

	// A new version that exits at once.
	if _, err := sv.Upgrade("up", "/bin/false"); err == nil || !strings.Contains(err.Error(), "exited with status 1 before READY=1") {
		t.Errorf("upgrade to /bin/false: %v", err)
	}
	// A new version that never says READY=1.
	never := filepath.Join(t.TempDir(), "never")
	os.WriteFile(never, []byte("#!/bin/sh\nexec sleep 100\n"), 0o755)
	if _, err := sv.Upgrade("up", never); err == nil || !strings.Contains(err.Error(), "not ready within upgrade_timeout 400ms") {
		t.Errorf("upgrade to a silent version: %v", err)
	}
	if _, err := sv.Upgrade("up", "/nonexistent"); err == nil || !strings.Contains(err.Error(), "/nonexistent") {
		t.Errorf("upgrade to a missing binary: %v", err)
	}
	if st := s.Status(); st.State != Running || st.Pid != old || st.Upgrades != 0 {
		t.Errorf("after failed upgrades: %+v, want pid %d still running", st, old)
	}
	if _, err := sv.Upgrade("nope", ""); !errors.Is(err, ErrUnknown) {
		t.Errorf("upgrade nope: %v", err)
	}
}

func TestUpgradeSwapsAndRefusesASecond(t *testing.T) {
	// Every version says READY=1 once $READY_FILE exists: the first finds it, the upgrade's
	// new version waits until the test has tried a second upgrade, so that one is refused
	// however slowly the machine runs (a fixed READY delay raced it).
	exe, env := helperExec("notify-after-file")
	readyFile := filepath.Join(t.TempDir(), "ready")
	os.WriteFile(readyFile, nil, 0o644)
	sv := supervisor(t, config.Service{Name: "up", Ready: config.ReadyNotify, Restart: config.RestartOnFailure, Exec: exe,
		Env: append(env, "READY_FILE="+readyFile), Socket: []config.Socket{{Name: "http", Listen: "tcp://127.0.0.1:0"}}})
	if r := sv.StartAll(); r[0].Err != nil {
		t.Fatalf("start: %v", r[0].Err)
	}
	os.Remove(readyFile)
	s := sv.Service("up")
	old := s.Status().Pid
	done := make(chan error, 1)
	go func() { _, err := sv.Upgrade("up", ""); done <- err }()
	if !s.WaitUntil(func(st Status) bool { return len(st.Generations) == 2 }, 5*time.Second) {
		t.Fatalf("status never showed two generations: %+v", s.Status())
	}
	if _, err := sv.Upgrade("up", ""); !errors.Is(err, ErrUpgradeInProgress) {
		t.Errorf("second upgrade while the first waits for READY=1: %v, want it refused", err)
	}
	os.WriteFile(readyFile, nil, 0o644)
	if err := <-done; err != nil {
		t.Fatalf("upgrade: %v", err)
	}
	st := s.Status()
	if st.State != Running || st.Pid == old || st.Upgrades != 1 || len(st.Generations) != 0 {
		t.Errorf("after upgrade: %+v (old pid %d)", st, old)
	}
	waitGone(t, old)
	// The new version is supervised like the first: a crash restarts it.
	unix.Kill(st.Pid, unix.SIGKILL)
	if !s.WaitUntil(func(x Status) bool { return x.Restarts == 1 && x.State == Running }, 5*time.Second) {
		t.Errorf("upgraded version not restarted after a crash: %+v", s.Status())
	}
}

func TestSystemdNotifyInterop(t *testing.T) {
	if _, err := exec.LookPath("systemd-notify"); err != nil {
		requireOrSkip(t, "systemd-notify not installed (Debian package systemd)")
	}
	sv := supervisor(t, config.Service{Name: "sn", Ready: config.ReadyNotify, StartTimeout: dur(5 * time.Second),
		Exec: sh("systemd-notify --ready --status=via-systemd-notify; exec sleep 100")})
	if r := sv.StartAll(); r[0].Err != nil {
		t.Fatalf("start: %v", r[0].Err)
	}
	if st := sv.Service("sn").Status(); st.State != Running || st.Status != "via-systemd-notify" {
		t.Errorf("status %+v", st)
	}
}

func TestLibsystemdInterop(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "sd.c")
	os.WriteFile(src, []byte(`#include <stdio.h>
#include <unistd.h>
#include <sys/socket.h>
#include <systemd/sd-daemon.h>
int main(void) {
	char **names = NULL;
	int n = sd_listen_fds_with_names(1, &names);
	printf("n=%d", n);
	for (int i = 0; i < n; i++)
		printf(" %s:%s", names[i], sd_is_socket(SD_LISTEN_FDS_START + i, AF_UNSPEC, SOCK_STREAM, 1) > 0 ? "listening" : "other");
	printf("\n");
	fflush(stdout);
	sd_notify(0, "READY=1\nSTATUS=from libsystemd");
	pause();
	return 0;
}
`), 0o644)
	bin := filepath.Join(dir, "sd")
	if out, err := exec.Command("cc", "-o", bin, src, "-lsystemd").CombinedOutput(); err != nil {
		requireOrSkip(t, "cannot build against libsystemd (Debian package libsystemd-dev): "+string(out))
	}
	sv := supervisor(t, config.Service{Name: "sd", Ready: config.ReadyNotify, Exec: []string{bin},
		Socket: []config.Socket{{Name: "http", Listen: "tcp://127.0.0.1:0"}, {Name: "admin", Listen: "unix://" + filepath.Join(dir, "a.sock")}}})
	if r := sv.StartAll(); r[0].Err != nil {
		t.Fatalf("start: %v", r[0].Err)
	}
	s := sv.Service("sd")
	if line := waitLog(t, s, "n="); line != "n=2 http:listening admin:listening" {
		t.Errorf("sd_listen_fds_with_names saw %q", line)
	}
	if st := s.Status(); st.Status != "from libsystemd" {
		t.Errorf("status %+v", st)
	}
}

// requireOrSkip skips, unless BATON_REQUIRE_INTEROP=1 (make test sets it, and CI installs the
// packages) makes a missing peer a failure.
func requireOrSkip(t *testing.T, why string) {
	t.Helper()
	if os.Getenv("BATON_REQUIRE_INTEROP") == "1" {
		t.Fatal(why)
	}
	t.Skip(why)
}

func TestStopDuringUpgradeAbandonsIt(t *testing.T) {
	exe, env := helperExec("notify-ready")
	sv := supervisor(t, config.Service{Name: "up", Ready: config.ReadyNotify, Exec: exe, Env: env,
		UpgradeTimeout: dur(30 * time.Second)})
	sv.StartAll()
	s := sv.Service("up")
	never := filepath.Join(t.TempDir(), "never")
	os.WriteFile(never, []byte("#!/bin/sh\nexec sleep 100\n"), 0o755)
	done := make(chan error, 1)
	go func() { _, err := sv.Upgrade("up", never); done <- err }()
	if !s.WaitUntil(func(st Status) bool { return len(st.Generations) == 2 }, 5*time.Second) {
		t.Fatalf("no upgrade in progress: %+v", s.Status())
	}
	newPid := s.Status().Generations[1].Pid
	if _, err := sv.Stop("up"); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err == nil || !strings.Contains(err.Error(), "the service is being stopped") {
		t.Errorf("upgrade during stop: %v", err)
	}
	if st := s.Status(); st.State != Stopped || st.Pid != 0 {
		t.Errorf("after stop: %+v", st)
	}
	waitGone(t, newPid)
}

// A program that does not use handoff/client never reads its control channel: an upgrade
// tells it to stop as soon as the new version is ready, without waiting ackTimeout for an
// ACK that cannot come. One that does (it said HELLO) is offered the handoff as before.
func TestUpgradeOfAPlainProgramDoesNotWaitForAnAck(t *testing.T) {
	exe, env := helperExec("notify-ready")
	log := &logRecorder{}
	sv := supervisorLog(t, slog.New(log),
		config.Service{Name: "plain", Exec: sh("exec sleep 100"), UpgradeSettle: dur(50 * time.Millisecond)},
		config.Service{Name: "lib", Ready: config.ReadyNotify, Exec: exe, Env: env})
	sv.StartAll()
	start := time.Now()
	rep, err := sv.Upgrade("plain", "")
	if err != nil {
		t.Fatal(err)
	}
	// What the supervisor decided, not how long it took (a loaded machine can take ackTimeout
	// for the whole upgrade): it stopped the old version at once instead of offering a handoff.
	took := time.Since(start)
	if stopped := log.values("upgrade: the old version never opened its control channel; stopping it now", "old_pid"); len(stopped) != 1 || rep.Handoff {
		t.Errorf("upgrade of a plain program (took %v): handoff %v, %d 'stopping it now' lines; want the old version stopped without an offer", took, rep.Handoff, len(stopped))
	}
	if rep, err := sv.Upgrade("lib", ""); err != nil || !rep.Handoff {
		t.Errorf("upgrade of a handoff/client program: %v, handoff %v; want the offer taken", err, rep.Handoff)
	}
}
