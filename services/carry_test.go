package services

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/baton-init/baton/config"
	"github.com/baton-init/baton/handoff/client"
)

// The "carry" helper dials $CARRY_ADDR twice and keeps both connections; on SIGTERM it hands
// them to its successor (state "conn-N"), as examples/stream does. Started with inherited
// connections, it answers on each "adopted STATE".
func init() {
	if os.Getenv("BATON_TEST_HELPER") != "carry" {
		return
	}
	term := make(chan os.Signal, 1)
	signal.Notify(term, unix.SIGTERM)
	inherited := client.Inherited()
	var conns []net.Conn
	for i := 0; i < 2; i++ {
		c, err := net.Dial("tcp", os.Getenv("CARRY_ADDR"))
		if err != nil {
			fmt.Println("dial:", err)
			os.Exit(1)
		}
		fmt.Fprintf(c, "hello %d\n", i)
		conns = append(conns, c)
	}
	client.Ready()
	go func() {
		for a := range inherited {
			fmt.Fprintf(a.Conn, "adopted %s\n", a.State)
		}
	}()
	<-term
	next := client.Successor()
	if next == nil {
		fmt.Println("no successor")
		os.Exit(0)
	}
	for i, c := range conns {
		if err := next.Send(c.(syscall.Conn), []byte(fmt.Sprintf("conn-%d", i))); err != nil {
			fmt.Println("send:", err)
		}
	}
	next.Close()
	os.Exit(0)
}

// TestCarryConnections: the service hands its connections to baton when stopped after an
// offer (as to an upgrade's next version); given back with Inherit, the next start adopts
// them with their state. The peer's connections stay open throughout.
func TestCarryConnections(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	exe, env := helperExec("carry")
	sv := supervisor(t, config.Service{Name: "c", Exec: exe, Env: append(env, "CARRY_ADDR="+ln.Addr().String()),
		Ready: config.ReadyNotify, KeepConnections: true})
	if r := sv.StartAll(); r[0].Err != nil {
		t.Fatal(r[0].Err)
	}
	var peers []*bufio.Reader
	for i := 0; i < 2; i++ {
		c, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(20 * time.Second))
		r := bufio.NewReader(c)
		if l, _ := r.ReadString('\n'); !strings.HasPrefix(l, "hello") {
			t.Fatalf("peer read %q", l)
		}
		peers = append(peers, r)
	}
	col, err := sv.OfferCarry("c")
	if err != nil {
		t.Fatalf("offer: %v", err)
	}
	sv.StopAll()
	conns, err := col.Wait(5 * time.Second)
	if err != nil || len(conns) != 2 {
		t.Fatalf("collected %d connections, %v; want 2", len(conns), err)
	}
	if err := sv.Inherit("c", conns); err != nil {
		t.Fatal(err)
	}
	if err := sv.Start("c"); err != nil {
		t.Fatal(err)
	}
	// The helper dialled twice more at its start; each old peer hears from the adopter.
	got := map[string]bool{}
	for _, r := range peers {
		l, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("old peer: %v", err)
		}
		got[strings.TrimSpace(l)] = true
	}
	if !got["adopted conn-0"] || !got["adopted conn-1"] {
		t.Errorf("peers heard %v; want both connections adopted with their state", got)
	}
}

// TestCarryOfferRefused: a program without the client library is not offered the channel.
func TestCarryOfferRefused(t *testing.T) {
	sv := supervisor(t, config.Service{Name: "plain", Exec: sh("sleep 100")})
	if r := sv.StartAll(); r[0].Err != nil {
		t.Fatal(r[0].Err)
	}
	if _, err := sv.OfferCarry("plain"); err == nil || !strings.Contains(err.Error(), "control channel") {
		t.Errorf("offer to a plain program: %v, want a refusal naming its control channel", err)
	}
	sv.StopAll()
	if _, err := sv.OfferCarry("plain"); err == nil || !strings.Contains(err.Error(), "not running") {
		t.Errorf("offer to a stopped service: %v, want 'not running'", err)
	}
}

// TestCarriedWaitingReexecAndClose: connections a kexec carried for a service that has not
// started yet are in a re-exec's state (duplicated for the next image; -1 in a snapshot) and
// are taken over by the restored supervisor; Close closes them (the peer sees the end) once
// no image holds them.
func TestCarriedWaitingReexecAndClose(t *testing.T) {
	sv := supervisor(t, config.Service{Name: "c", Exec: sh("sleep 100")})
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	peer := pair[1]
	defer unix.Close(peer)
	if err := sv.Inherit("c", []Carried{{Fd: pair[0], State: []byte("conn-0")}}); err != nil {
		t.Fatal(err)
	}
	snap, err := sv.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	if got := snap.Services[0].Carried; len(got) != 1 || got[0].Fd != -1 || string(got[0].State) != "conn-0" {
		t.Errorf("snapshot's carried connections: %+v; want one, fd -1, state conn-0", got)
	}
	f, err := sv.Freeze(reaper)
	if err != nil {
		t.Fatal(err)
	}
	got := f.Saved.Services[0].Carried
	if len(got) != 1 || got[0].Fd < 3 || got[0].Fd == pair[0] || string(got[0].State) != "conn-0" {
		f.Thaw()
		t.Fatalf("frozen state's carried connections: %+v; want one duplicate of fd %d with state conn-0", got, pair[0])
	}
	r, err := Restore(f.Saved, config.Log{}, Options{Log: sv.log, Reaper: reaper, RunDir: t.TempDir()})
	if err != nil {
		f.Thaw()
		t.Fatal(err)
	}
	f.Fds = nil // the restored supervisor owns the duplicates now
	f.Thaw()
	if c := r.SV.Service("c").carried.conns; len(c) != 1 || c[0].Fd != got[0].Fd {
		t.Errorf("restored carried connections: %+v; want fd %d", c, got[0].Fd)
	}
	sv.StopAll()
	if err := sv.Close(); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1)
	if n, _, err := unix.Recvfrom(peer, buf, unix.MSG_DONTWAIT); err != unix.EAGAIN {
		t.Fatalf("peer after the old supervisor's Close: read %d, %v; want EAGAIN (the restored one holds it)", n, err)
	}
	r.Start()
	r.SV.StopAll()
	if err := r.SV.Close(); err != nil {
		t.Fatal(err)
	}
	if n, _, err := unix.Recvfrom(peer, buf, unix.MSG_DONTWAIT); n != 0 || err != nil {
		t.Errorf("peer after the restored supervisor's Close: read %d, %v; want the end (0, nil)", n, err)
	}
}
