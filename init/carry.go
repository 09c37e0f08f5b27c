package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/baton-init/baton/services"
	"github.com/baton-init/baton/system/tcprepair"
)

// Established TCP connections of the services that set keep_connections are carried across
// initctl kexec (issue 15). On the old kernel, in the shutdown:
//
//  1. before the services stop: new SYNs to their ports are dropped (the client retransmits
//     them to the next kernel) and each service is offered a handoff channel whose other
//     end baton keeps, as an upgrade offers one to the next version;
//  2. once they stopped: the connections they handed over, and any left in their listening
//     sockets' backlog, are locked (nftables drops their packets both ways), dumped with
//     TCP_REPAIR (the sockets stay open, in repair mode: a failed jump resumes them), and
//     written with the services' state blobs to /boot/baton-carried.json, tagged with the
//     shutdown id the next kernel's command line carries (baton.prev=).
//
// On the new kernel (carry_boot.go) the same lock is set before the network comes up, each
// socket is rebuilt once it has, the lock is lifted, and the service starts with them.
//
// Why /boot and not a reserved memory range: /boot is already where the shutdown timeline
// goes, matched by the same id; it needs no change to the kernel's memory map or command
// line (fixed at load time, before the shutdown knows what it will carry), survives a jump
// that goes wrong into a firmware reboot as an obviously stale file, and costs one small
// fsync'd write. An appliance without a writable /boot carries nothing (logged).
const carriedFile = "/boot/baton-carried.json"

// lockTable is the nftables table (inet family) of the lock, on both kernels.
const lockTable = "baton-carry"

type carryRecord struct {
	ID    string        `json:"id"`
	Conns []carriedConn `json:"conns"`
}

type carriedConn struct {
	Service string          `json:"service"`
	State   []byte          `json:"state,omitempty"` // the service's blob
	TCP     tcprepair.State `json:"tcp"`
}

// carrying is the old kernel's side, from the offer to the jump.
type carrying struct {
	lock       *tcprepair.Lock
	collectors []*services.Collector
	fds        []int // dumped sockets, in repair mode until the jump
	conns      []carriedConn
	byService  map[string][]services.Carried // for a failed jump: given back at once
}

// withCarry adds the carrying steps around "stop services" in the kexec's shutdown.
func (m *machine) withCarry(list []step) []step {
	var out []step
	for _, s := range list {
		if s.name == "stop services" {
			out = append(out, step{name: "offer connections to carry", run: m.offerCarry}, s,
				step{name: "dump carried connections", run: m.dumpCarried})
			continue
		}
		out = append(out, s)
	}
	return out
}

// keepServices lists the services that carry their connections.
func (m *machine) keepServices() []string {
	var names []string
	if m.cfg != nil {
		for _, s := range m.cfg.Service {
			if s.KeepConnections {
				names = append(names, s.Name)
			}
		}
	}
	return names
}

// offerCarry runs before the services stop (kexec only). A failure costs the connections of
// one service, or all of them, never the kexec.
func (m *machine) offerCarry() error {
	names := m.keepServices()
	if len(names) == 0 || m.sv == nil {
		return nil
	}
	if !writableBoot() {
		return fmt.Errorf("connections not carried: /boot is not a writable mount (%s goes there)", carriedFile)
	}
	lock, err := tcprepair.NewLock(lockTable)
	if err != nil {
		return fmt.Errorf("connections not carried: %w", err)
	}
	c := &carrying{lock: lock, byService: map[string][]services.Carried{}}
	m.mu.Lock()
	m.carry = c
	m.mu.Unlock()
	var ports []uint16
	for _, name := range names {
		for _, fd := range m.sv.ListeningTCP(name) {
			if sa, err := unix.Getsockname(fd); err == nil {
				ports = append(ports, uint16(sockPort(sa)))
			}
		}
	}
	if err := lock.DropSYNs(ports); err != nil {
		m.log.Warn("new connections may land in a backlog that dies with this kernel", "err", err)
	}
	for _, name := range names {
		col, err := m.sv.OfferCarry(name)
		if err != nil {
			m.log.Warn("connections not carried", "service", name, "reason", err)
			continue
		}
		c.collectors = append(c.collectors, col)
	}
	return nil
}

// dumpCarried runs once the services have stopped: it locks and dumps what they handed over.
func (m *machine) dumpCarried() error {
	m.mu.Lock()
	c := m.carry
	m.mu.Unlock()
	if c == nil {
		return nil
	}
	type handed struct {
		service string
		services.Carried
	}
	var all []handed
	for _, col := range c.collectors {
		got, err := col.Wait(2 * time.Second)
		if err != nil {
			m.log.Warn("connections handed over in part", "service", col.Service, "count", len(got), "err", err)
		}
		for _, h := range got {
			all = append(all, handed{col.Service, h})
		}
	}
	for _, name := range m.keepServices() {
		for _, fd := range acceptLeftovers(m.sv.ListeningTCP(name)) {
			all = append(all, handed{name, services.Carried{Fd: fd}})
		}
	}
	if len(all) == 0 {
		return nil
	}
	flows := make([]tcprepair.Flow, 0, len(all))
	for _, h := range all {
		if f, err := flowOf(h.Fd); err == nil {
			flows = append(flows, f)
		}
	}
	if err := c.lock.DropFlows(flows, true); err != nil {
		// Without the lock the kernel would go on acknowledging data the dump no longer
		// holds: better to lose the connections openly than their bytes silently.
		for _, h := range all {
			unix.Close(h.Fd)
		}
		return fmt.Errorf("%d connections not carried: %w", len(all), err)
	}
	for _, h := range all {
		st, err := tcprepair.Dump(h.Fd)
		if err != nil {
			m.log.Warn("connection not carried", "service", h.service, "reason", err)
			unix.Close(h.Fd)
			continue
		}
		c.fds = append(c.fds, h.Fd)
		c.conns = append(c.conns, carriedConn{Service: h.service, State: h.State, TCP: st})
		c.byService[h.service] = append(c.byService[h.service], h.Carried)
	}
	if err := writeCarried(carryRecord{ID: m.shutdownID(), Conns: c.conns}); err != nil {
		return fmt.Errorf("%d connections not carried: %w", len(c.conns), err)
	}
	m.log.Info("connections dumped for the next kernel", "count", len(c.conns), "of", len(all), "file", carriedFile)
	return nil
}

// resumeCarried gives the connections back after a jump that did not happen: out of repair
// mode, unlocked, to the services as they start again.
func (m *machine) resumeCarried() {
	m.mu.Lock()
	c := m.carry
	m.carry = nil
	m.mu.Unlock()
	if c == nil {
		return
	}
	_ = os.Remove(carriedFile)
	for _, fd := range c.fds {
		if err := tcprepair.Resume(fd); err != nil {
			m.log.Warn("connection lost", "reason", err)
		}
	}
	if err := c.lock.Release(); err != nil {
		m.log.Error("carried connections stay locked", "err", err)
	}
	for name, conns := range c.byService {
		_ = m.sv.Inherit(name, conns)
	}
}

// acceptLeftovers takes the connections still in the listening sockets' backlogs (completed
// before the SYN lock, never accepted by the service): carried with no state, they reach the
// next service as new connections.
func acceptLeftovers(listeners []int) []int {
	var fds []int
	for _, l := range listeners {
		for {
			pfd := []unix.PollFd{{Fd: int32(l), Events: unix.POLLIN}}
			if n, err := unix.Poll(pfd, 0); err != nil || n == 0 {
				break
			}
			fd, _, err := unix.Accept4(l, unix.SOCK_CLOEXEC)
			if err != nil {
				break
			}
			fds = append(fds, fd)
		}
	}
	return fds
}

func flowOf(fd int) (tcprepair.Flow, error) {
	l, err := unix.Getsockname(fd)
	if err != nil {
		return tcprepair.Flow{}, err
	}
	r, err := unix.Getpeername(fd)
	if err != nil {
		return tcprepair.Flow{}, err
	}
	return tcprepair.Flow{Local: addrPortOf(l), Remote: addrPortOf(r)}, nil
}

func addrPortOf(sa unix.Sockaddr) netip.AddrPort {
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port))
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(a.Addr).Unmap(), uint16(a.Port))
	}
	return netip.AddrPort{}
}

func sockPort(sa unix.Sockaddr) int {
	return int(addrPortOf(sa).Port())
}

func writableBoot() bool {
	var st unix.Statfs_t
	return unix.Statfs("/boot", &st) == nil && st.Flags&unix.ST_RDONLY == 0 && isMountPoint("/boot")
}

func writeCarried(rec carryRecord) error {
	data, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	f, err := os.Create(carriedFile)
	if err != nil {
		return fmt.Errorf("write %s: %w", carriedFile, err)
	}
	_, err = f.Write(data)
	if err = errors.Join(err, f.Sync(), f.Close()); err != nil {
		return fmt.Errorf("write %s: %w", carriedFile, err)
	}
	return nil
}
