package tcprepair

import (
	"errors"
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Restore rebuilds the connection s describes and returns its socket (close-on-exec,
// blocking), still in repair mode: call Resume once the caller is ready for the peer's
// packets — and only then lift the flow's Lock, so that no packet of the connection meets
// this kernel before its socket exists (the kernel would answer it with a reset).
//
// The local address must be assigned (or IP_FREEBIND-able) and the peer reachable by a
// route: a repair-mode connect looks the route up like any other.
func Restore(s State) (int, error) {
	family := unix.AF_INET
	if !s.Local.Addr().Is4() {
		family = unix.AF_INET6
	}
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, unix.IPPROTO_TCP)
	if err != nil {
		return -1, fmt.Errorf("socket: %w", err)
	}
	if err := restore(fd, s); err != nil {
		unix.Close(fd) // in repair mode: nothing reaches the peer
		return -1, err
	}
	return fd, nil
}

func restore(fd int, s State) error {
	// Repair mode also forces SO_REUSEADDR: the held listening socket has the same port.
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_REPAIR, unix.TCP_REPAIR_ON); err != nil {
		return fmt.Errorf("setsockopt(TCP_REPAIR, on): %w (needs CAP_NET_ADMIN)", err)
	}
	if s.Local.Addr().Is4() {
		_ = unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_FREEBIND, 1)
	} else {
		_ = unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_FREEBIND, 1)
	}
	if err := unix.Bind(fd, toSockaddr(s.Local)); err != nil {
		return fmt.Errorf("bind %s: %w", s.Local, err)
	}
	// The sequence numbers where the queues start; writing the queues below moves them on
	// to RecvSeq and SendSeq.
	if err := setQueueSeq(fd, tcpRecvQueue, s.RecvSeq-uint32(len(s.RecvQueue))); err != nil {
		return err
	}
	if err := setQueueSeq(fd, tcpSendQueue, s.SendSeq-uint32(len(s.SendQueue))); err != nil {
		return err
	}
	if err := unix.Connect(fd, toSockaddr(s.Remote)); err != nil {
		return fmt.Errorf("connect %s → %s in repair mode: %w (is the address assigned and the peer routed?)", s.Local, s.Remote, err)
	}
	if err := setOptions(fd, s); err != nil {
		return err
	}
	if err := writeQueue(fd, tcpRecvQueue, s.RecvQueue); err != nil {
		return err
	}
	sent := s.SendQueue[:len(s.SendQueue)-int(min(s.Unsent, uint32(len(s.SendQueue))))]
	if err := writeQueue(fd, tcpSendQueue, sent); err != nil {
		return err
	}
	// The window is checked against the receive queue's end: set it after the queues.
	w := s.Window
	if _, _, e := unix.Syscall6(unix.SYS_SETSOCKOPT, uintptr(fd), unix.IPPROTO_TCP, unix.TCP_REPAIR_WINDOW,
		uintptr(unsafe.Pointer(&w)), unsafe.Sizeof(w), 0); e != 0 {
		return fmt.Errorf("setsockopt(TCP_REPAIR_WINDOW %+v): %w", w, e)
	}
	if unsent := s.SendQueue[len(sent):]; len(unsent) > 0 {
		// Never sent: queued as ordinary data once out of repair mode (CRIU does the same).
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_REPAIR, unix.TCP_REPAIR_OFF_NO_WP); err != nil {
			return fmt.Errorf("setsockopt(TCP_REPAIR, off) for the unsent bytes: %w", err)
		}
		n, err := unix.SendmsgN(fd, unsent, nil, nil, unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL)
		if err == nil && n < len(unsent) {
			err = fmt.Errorf("%d of %d bytes queued", n, len(unsent))
		}
		if err != nil {
			return fmt.Errorf("queue the %d unsent bytes: %w", len(unsent), err)
		}
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_REPAIR, unix.TCP_REPAIR_ON); err != nil {
			return fmt.Errorf("setsockopt(TCP_REPAIR, on): %w", err)
		}
	}
	return nil
}

func setQueueSeq(fd, queue int, seq uint32) error {
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_REPAIR_QUEUE, queue); err != nil {
		return fmt.Errorf("setsockopt(TCP_REPAIR_QUEUE, %d): %w", queue, err)
	}
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_QUEUE_SEQ, int(int32(seq))); err != nil {
		return fmt.Errorf("setsockopt(TCP_QUEUE_SEQ, %d): %w", seq, err)
	}
	return nil
}

// setOptions gives back what the handshake negotiated (TCP_REPAIR_OPTIONS can only be set;
// Dump read it from TCP_INFO and TCP_MAXSEG) and this end's timestamp clock: the new
// kernel's clock differs, and setting TCP_TIMESTAMP makes the socket's offset continue the
// old one, so the peer's PAWS check does not drop what it sends.
func setOptions(fd int, s State) error {
	var opts []unix.TCPRepairOpt
	if s.Options&optWscale != 0 {
		opts = append(opts, unix.TCPRepairOpt{Code: unix.TCPOPT_WINDOW, Val: uint32(s.SndWscale) | uint32(s.RcvWscale)<<16})
	}
	if s.Options&optTimestamps != 0 {
		opts = append(opts, unix.TCPRepairOpt{Code: unix.TCPOPT_TIMESTAMP})
	}
	if s.Options&optSACK != 0 {
		opts = append(opts, unix.TCPRepairOpt{Code: unix.TCPOPT_SACK_PERMITTED})
	}
	opts = append(opts, unix.TCPRepairOpt{Code: unix.TCPOPT_MAXSEG, Val: s.MSS})
	if err := unix.SetsockoptTCPRepairOpt(fd, unix.IPPROTO_TCP, unix.TCP_REPAIR_OPTIONS, opts); err != nil {
		return fmt.Errorf("setsockopt(TCP_REPAIR_OPTIONS %v): %w", opts, err)
	}
	if s.Options&optTimestamps != 0 {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_TIMESTAMP, int(int32(s.Timestamp))); err != nil {
			return fmt.Errorf("setsockopt(TCP_TIMESTAMP, %d): %w", s.Timestamp, err)
		}
	}
	return nil
}

// writeQueue puts data in a queue as if it had been received (recv) or sent and not yet
// acknowledged (send), in chunks the kernel can allocate.
func writeQueue(fd, queue int, data []byte) error {
	if len(data) == 0 {
		return nil
	}
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_REPAIR_QUEUE, queue); err != nil {
		return fmt.Errorf("setsockopt(TCP_REPAIR_QUEUE, %d): %w", queue, err)
	}
	defer unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_REPAIR_QUEUE, tcpNoQueue)
	chunk := len(data)
	for len(data) > 0 {
		n, err := unix.SendmsgN(fd, data[:min(chunk, len(data))], nil, nil, unix.MSG_NOSIGNAL)
		if errors.Is(err, unix.ENOMEM) && chunk > 1024 {
			chunk /= 2
			continue
		}
		if err != nil {
			return fmt.Errorf("write %d bytes into queue %d: %w", len(data), queue, err)
		}
		data = data[n:]
	}
	return nil
}
