// Package tcprepair dumps an established TCP connection and rebuilds it in another kernel
// with the kernel's TCP_REPAIR socket option, as CRIU's libsoccr does: the connection's
// addresses, sequence numbers, queued bytes, windows and negotiated options are read from the
// socket in repair mode (closing it then sends neither FIN nor RST), and a new socket in
// repair mode "connects" without a handshake and is given them back.
//
// The peer must not see anything while the connection has no socket: the caller drops the
// flow's packets with a Lock (lock.go) from before the dump until after the restore.
package tcprepair

import (
	"errors"
	"fmt"
	"net/netip"
	"unsafe"

	"golang.org/x/sys/unix"
)

// State is what a kernel needs to rebuild one established TCP connection.
type State struct {
	Local  netip.AddrPort `json:"local"`
	Remote netip.AddrPort `json:"remote"`
	// SendSeq is the sequence number after the last byte queued to send (write_seq);
	// SendQueue holds the bytes sent and not yet acknowledged, then Unsent bytes never sent.
	SendSeq   uint32 `json:"send_seq"`
	SendQueue []byte `json:"send_queue,omitempty"`
	Unsent    uint32 `json:"unsent,omitempty"`
	// RecvSeq is the next sequence number expected from the peer (rcv_nxt); RecvQueue holds
	// bytes received and acknowledged that the service had not read.
	RecvSeq   uint32 `json:"recv_seq"`
	RecvQueue []byte `json:"recv_queue,omitempty"`
	MSS       uint32 `json:"mss"`
	Options   uint8  `json:"options"` // TCPI_OPT_* negotiated at the handshake
	SndWscale uint8  `json:"snd_wscale"`
	RcvWscale uint8  `json:"rcv_wscale"`
	Timestamp uint32 `json:"timestamp,omitempty"` // this end's TCP timestamp clock at the dump
	Window    Window `json:"window"`
}

// Window is struct tcp_repair_window.
type Window struct {
	SndWl1    uint32 `json:"snd_wl1"`
	SndWnd    uint32 `json:"snd_wnd"`
	MaxWindow uint32 `json:"max_window"`
	RcvWnd    uint32 `json:"rcv_wnd"`
	RcvWup    uint32 `json:"rcv_wup"`
}

// From include/uapi/linux/tcp.h (not in x/sys/unix).
const (
	tcpNoQueue   = 0
	tcpRecvQueue = 1
	tcpSendQueue = 2

	optTimestamps = 1 // TCPI_OPT_TIMESTAMPS
	optSACK       = 2 // TCPI_OPT_SACK
	optWscale     = 4 // TCPI_OPT_WSCALE

	tcpEstablished = 1
)

var tcpStates = []string{1: "ESTABLISHED", "SYN_SENT", "SYN_RECV", "FIN_WAIT1", "FIN_WAIT2", "TIME_WAIT",
	"CLOSE", "CLOSE_WAIT", "LAST_ACK", "LISTEN", "CLOSING", "NEW_SYN_RECV"}

func stateName(s uint8) string {
	if int(s) < len(tcpStates) && tcpStates[s] != "" {
		return tcpStates[s]
	}
	return fmt.Sprintf("state %d", s)
}

// Dump puts fd, an established TCP socket, in repair mode and reads its state. The socket
// stays in repair mode: closing it afterwards tells the peer nothing; Resume takes it out
// (a kexec that did not happen). On error the socket is left as it was found when possible.
func Dump(fd int) (State, error) {
	var s State
	info, err := getsockoptBytes(fd, unix.IPPROTO_TCP, unix.TCP_INFO, 256, 8)
	if err != nil {
		return s, fmt.Errorf("getsockopt(TCP_INFO): %w (not a TCP socket?)", err)
	}
	if info[0] != tcpEstablished {
		return s, fmt.Errorf("connection is %s: only ESTABLISHED ones are carried", stateName(info[0]))
	}
	if s.Local, err = sockAddr(unix.Getsockname(fd)); err != nil {
		return s, fmt.Errorf("getsockname: %w", err)
	}
	if s.Remote, err = sockAddr(unix.Getpeername(fd)); err != nil {
		return s, fmt.Errorf("getpeername: %w", err)
	}
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_REPAIR, unix.TCP_REPAIR_ON); err != nil {
		return s, fmt.Errorf("setsockopt(TCP_REPAIR, on): %w (needs CAP_NET_ADMIN)", err)
	}
	if err := dumpRepaired(fd, &s); err != nil {
		_ = Resume(fd)
		return s, err
	}
	return s, nil
}

func dumpRepaired(fd int, s *State) error {
	// Read again in repair mode: nothing moves from here on (the flow is locked, and a
	// socket in repair mode sends nothing).
	info, err := getsockoptBytes(fd, unix.IPPROTO_TCP, unix.TCP_INFO, 256, 8)
	if err != nil {
		return fmt.Errorf("getsockopt(TCP_INFO): %w", err)
	}
	if info[0] != tcpEstablished {
		return fmt.Errorf("connection became %s", stateName(info[0]))
	}
	s.Options, s.SndWscale, s.RcvWscale = info[5], info[6]&0x0f, info[6]>>4
	outq, err := unix.IoctlGetInt(fd, unix.SIOCOUTQ)
	if err != nil {
		return fmt.Errorf("ioctl(SIOCOUTQ): %w", err)
	}
	unsent, err := unix.IoctlGetInt(fd, unix.SIOCOUTQNSD)
	if err != nil {
		return fmt.Errorf("ioctl(SIOCOUTQNSD): %w", err)
	}
	inq, err := unix.IoctlGetInt(fd, unix.SIOCINQ)
	if err != nil {
		return fmt.Errorf("ioctl(SIOCINQ): %w", err)
	}
	s.Unsent = uint32(unsent)
	if s.RecvSeq, s.RecvQueue, err = dumpQueue(fd, tcpRecvQueue, inq); err != nil {
		return err
	}
	if s.SendSeq, s.SendQueue, err = dumpQueue(fd, tcpSendQueue, outq); err != nil {
		return err
	}
	_ = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_REPAIR_QUEUE, tcpNoQueue)
	mss, err := unix.GetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_MAXSEG)
	if err != nil {
		return fmt.Errorf("getsockopt(TCP_MAXSEG): %w", err)
	}
	s.MSS = uint32(mss)
	if s.Options&optTimestamps != 0 {
		ts, err := unix.GetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_TIMESTAMP)
		if err != nil {
			return fmt.Errorf("getsockopt(TCP_TIMESTAMP): %w", err)
		}
		s.Timestamp = uint32(ts)
	}
	w, err := getsockoptBytes(fd, unix.IPPROTO_TCP, unix.TCP_REPAIR_WINDOW, int(unsafe.Sizeof(Window{})), int(unsafe.Sizeof(Window{})))
	if err != nil {
		return fmt.Errorf("getsockopt(TCP_REPAIR_WINDOW): %w", err)
	}
	s.Window = *(*Window)(unsafe.Pointer(&w[0]))
	return nil
}

// dumpQueue reads one queue's sequence number and, without consuming them, its n bytes.
func dumpQueue(fd, queue, n int) (uint32, []byte, error) {
	name := map[int]string{tcpRecvQueue: "receive", tcpSendQueue: "send"}[queue]
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_REPAIR_QUEUE, queue); err != nil {
		return 0, nil, fmt.Errorf("setsockopt(TCP_REPAIR_QUEUE, %s): %w", name, err)
	}
	seq, err := unix.GetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_QUEUE_SEQ)
	if err != nil {
		return 0, nil, fmt.Errorf("getsockopt(TCP_QUEUE_SEQ, %s): %w", name, err)
	}
	if n == 0 {
		return uint32(seq), nil, nil
	}
	buf := make([]byte, n+1)
	got, _, err := unix.Recvfrom(fd, buf, unix.MSG_PEEK|unix.MSG_DONTWAIT)
	if err != nil {
		return 0, nil, fmt.Errorf("peek %s queue (%d bytes): %w", name, n, err)
	}
	if got != n {
		return 0, nil, fmt.Errorf("peek %s queue: %d bytes, the kernel counts %d", name, got, n)
	}
	return uint32(seq), buf[:n], nil
}

// Resume takes fd out of repair mode. The kernel then sends a window probe, so the peer
// answers at once with where it stands instead of waiting for its retransmission timer.
func Resume(fd int) error {
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_REPAIR, unix.TCP_REPAIR_OFF); err != nil {
		return fmt.Errorf("setsockopt(TCP_REPAIR, off): %w", err)
	}
	return nil
}

func sockAddr(sa unix.Sockaddr, err error) (netip.AddrPort, error) {
	if err != nil {
		return netip.AddrPort{}, err
	}
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port)), nil
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(a.Addr), uint16(a.Port)), nil
	}
	return netip.AddrPort{}, errors.New("not an IP socket")
}

func toSockaddr(ap netip.AddrPort) unix.Sockaddr {
	if ap.Addr().Is4() {
		return &unix.SockaddrInet4{Addr: ap.Addr().As4(), Port: int(ap.Port())}
	}
	return &unix.SockaddrInet6{Addr: ap.Addr().As16(), Port: int(ap.Port())}
}

// getsockoptBytes reads an option of up to n bytes that x/sys/unix has no typed call for
// (TCP_INFO's window-scale bit field, struct tcp_repair_window, whose size must be exact),
// at most size bytes and at least n.
func getsockoptBytes(fd, level, opt, size, n int) ([]byte, error) {
	buf := make([]byte, size)
	l := uint32(len(buf))
	_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), uintptr(level), uintptr(opt),
		uintptr(unsafe.Pointer(&buf[0])), uintptr(unsafe.Pointer(&l)), 0)
	if e != 0 {
		return nil, e
	}
	if int(l) < n {
		return nil, fmt.Errorf("%d bytes, want %d", l, n)
	}
	return buf[:l], nil
}
