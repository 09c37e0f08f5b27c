package tcprepair

import (
	"bufio"
	"io"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// inNetns runs fn on a thread in a network namespace of its own (only lo, up), so the test's
// sockets and nftables table never touch the host's stack. It needs root (CAP_SYS_ADMIN and
// CAP_NET_ADMIN); it skips when it cannot have them.
func inNetns(t *testing.T, fn func()) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: a network namespace, TCP_REPAIR and nftables need CAP_NET_ADMIN")
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		// Never unlocked: the thread, in another namespace, ends with the goroutine.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			t.Errorf("unshare(CLONE_NEWNET): %v", err)
			return
		}
		lo, err := netlink.LinkByName("lo")
		if err == nil {
			err = netlink.LinkSetUp(lo)
		}
		if err != nil {
			t.Errorf("lo up: %v", err)
			return
		}
		fn()
	}()
	<-done
}

// TestRepairRoundTripRoot dumps the server end of a loopback connection with bytes in both
// queues (received and unread; sent and unacknowledged, held back by the lock), closes it in
// repair mode, rebuilds it, and checks that the peer, which saw nothing, goes on exchanging
// with the rebuilt socket: no byte lost or doubled, no reset.
// Run twice: with the lock dropping the server's packets too (the bytes are never sent, they
// come back as unsent) and with it dropping only the peer's (sent, not acknowledged: the
// rebuilt socket retransmits them and the peer drops the duplicate).
func TestRepairRoundTripRoot(t *testing.T) {
	for _, outgoing := range []bool{true, false} {
		t.Run(map[bool]string{true: "both-ways", false: "incoming-only"}[outgoing], func(t *testing.T) {
			roundTrip(t, outgoing)
		})
	}
}

func roundTrip(t *testing.T, outgoing bool) {
	inNetns(t, func() {
		lock, err := NewLock("baton-test")
		if err != nil {
			t.Skipf("nftables not available: %v", err)
		}
		defer lock.Release()
		ln, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		peer, err := net.Dial("tcp4", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer peer.Close()
		_ = peer.SetDeadline(time.Now().Add(20 * time.Second))
		srv, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		exchange(t, srv, peer, "hello\n")
		exchange(t, peer, srv, "hi\n")

		// Unread by the server: must come back in the rebuilt receive queue.
		write(t, peer, "unread line\n")
		waitQueued(t, srv, unix.SIOCINQ, len("unread line\n"))
		f := Flow{Local: addrPort(srv.LocalAddr()), Remote: addrPort(srv.RemoteAddr())}
		if err := lock.DropFlows([]Flow{f}, outgoing); err != nil {
			t.Fatal(err)
		}
		// Sent while locked: never acknowledged, so it must survive in the send queue.
		write(t, srv, "held back\n")
		waitQueued(t, srv, unix.SIOCOUTQ, len("held back\n"))

		file, err := srv.(*net.TCPConn).File()
		if err != nil {
			t.Fatal(err)
		}
		srv.Close()
		fd := int(file.Fd())
		st, err := Dump(fd)
		if err != nil {
			t.Fatalf("dump: %v", err)
		}
		t.Logf("dumped %s: recv %q, send %q (unsent %d), mss %d, options %#x, wscale %d/%d, ts %d, window %+v",
			f, st.RecvQueue, st.SendQueue, st.Unsent, st.MSS, st.Options, st.SndWscale, st.RcvWscale, st.Timestamp, st.Window)
		if string(st.RecvQueue) != "unread line\n" || string(st.SendQueue) != "held back\n" || (st.Unsent == 0) != !outgoing {
			t.Fatalf("queues: recv %q, send %q", st.RecvQueue, st.SendQueue)
		}
		file.Close() // in repair mode: the peer is told nothing

		nfd, err := Restore(st)
		if err != nil {
			t.Fatalf("restore: %v", err)
		}
		if err := Resume(nfd); err != nil {
			t.Fatal(err)
		}
		if err := lock.Release(); err != nil {
			t.Fatal(err)
		}
		back, err := net.FileConn(os.NewFile(uintptr(nfd), "restored"))
		if err != nil {
			t.Fatal(err)
		}
		defer back.Close()
		_ = back.SetDeadline(time.Now().Add(20 * time.Second))
		expectLine(t, bufio.NewReader(back), "unread line\n")
		expectLine(t, bufio.NewReader(peer), "held back\n")
		exchange(t, peer, back, "after\n")
		exchange(t, back, peer, "and back\n")
	})
}

// TestDumpRefusesRoot: what cannot be carried says why.
func TestDumpRefusesRoot(t *testing.T) {
	inNetns(t, func() {
		ln, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		f, _ := ln.(*net.TCPListener).File()
		defer f.Close()
		if _, err := Dump(int(f.Fd())); err == nil || !strings.Contains(err.Error(), "LISTEN") {
			t.Errorf("dump of a listening socket: %v, want a refusal naming LISTEN", err)
		}
		st := State{Local: netip.MustParseAddrPort("127.0.0.1:9"), Remote: netip.MustParseAddrPort("192.0.2.1:9")}
		if _, err := Restore(st); err == nil || !strings.Contains(err.Error(), "connect") {
			t.Errorf("restore towards an unrouted peer: %v, want the connect's failure", err)
		}
	})
}

func addrPort(a net.Addr) netip.AddrPort {
	ap := a.(*net.TCPAddr).AddrPort()
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

func write(t *testing.T, c net.Conn, s string) {
	t.Helper()
	if _, err := io.WriteString(c, s); err != nil {
		t.Fatal(err)
	}
}

func exchange(t *testing.T, from, to net.Conn, s string) {
	t.Helper()
	write(t, from, s)
	expectLine(t, bufio.NewReader(to), s)
}

func expectLine(t *testing.T, r *bufio.Reader, want string) {
	t.Helper()
	got, err := r.ReadString('\n')
	if err != nil || got != want {
		t.Fatalf("read %q, %v; want %q", got, err, want)
	}
}

// waitQueued waits until the kernel counts n bytes in the socket's queue (SIOCINQ/SIOCOUTQ).
func waitQueued(t *testing.T, c net.Conn, req uint, n int) {
	t.Helper()
	raw, _ := c.(*net.TCPConn).SyscallConn()
	deadline := time.Now().Add(5 * time.Second)
	for {
		var got int
		_ = raw.Control(func(fd uintptr) { got, _ = unix.IoctlGetInt(int(fd), req) })
		if got >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("queue holds %d bytes, want %d", got, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestDropSYNsRoot: while locked, a connection request to the port goes unanswered (the
// client retransmits; neither accepted nor refused); once released, it is accepted.
func TestDropSYNsRoot(t *testing.T) {
	inNetns(t, func() {
		lock, err := NewLock("baton-test")
		if err != nil {
			t.Skipf("nftables not available: %v", err)
		}
		ln, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		if err := lock.DropSYNs([]uint16{addrPort(ln.Addr()).Port()}); err != nil {
			t.Fatal(err)
		}
		_, err = net.DialTimeout("tcp4", ln.Addr().String(), 300*time.Millisecond)
		if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
			t.Fatalf("dial while locked: %v, want a timeout", err)
		}
		if err := lock.Release(); err != nil {
			t.Fatal(err)
		}
		c, err := net.DialTimeout("tcp4", ln.Addr().String(), 5*time.Second)
		if err != nil {
			t.Fatalf("dial after release: %v", err)
		}
		c.Close()
	})
}
