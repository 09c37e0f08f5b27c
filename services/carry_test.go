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
