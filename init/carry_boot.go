package main

import (
	"encoding/json"
	"errors"
	"io/fs"
	"os"

	"golang.org/x/sys/unix"

	"github.com/baton-init/baton/services"
	"github.com/baton-init/baton/system/tcprepair"
)

// The new kernel's side of carrying connections (see carry.go): lock the carried flows
// before the interface comes up, rebuild each socket once it is up (a repair-mode connect
// needs the local address and a route), take them out of repair mode, lift the lock, and
// give them to their services, which start only then.

const (
	stepCarryLock    = "lock carried connections"
	stepCarryRestore = "restore carried connections"
)

// carryIn is what the previous kernel carried, between the lock and the restore.
type carryIn struct {
	rec  carryRecord
	lock *tcprepair.Lock // nil when the lock could not be set
}

// carryPending says whether this boot may have connections to restore: it follows a kexec
// (baton.prev=) and a service keeps its connections. Only then does the network wait for
// /boot (the lock must be in place before the interface is up).
func (m *machine) carryPending() bool {
	_, kexeced := m.cmdline.Get("baton.prev")
	return kexeced && len(m.keepServices()) > 0
}

// networkAfter is what configuring the network waits for: the held sockets bound (no SYN meets
// a kernel without a listener), not the modules — it waits for its interface to appear while
// they load (configureNetwork), so it comes up once its own driver has bound.
func (m *machine) networkAfter() []string {
	after := []string{stepControl}
	if m.carryPending() {
		after = append(after, stepCarryLock)
	}
	return after
}

// lockCarried reads (once) what the previous kernel carried and drops the flows' incoming
// packets until restoreCarried has rebuilt their sockets: a packet of a carried connection
// that met this kernel first would be answered with a reset.
func (m *machine) lockCarried() error {
	if !m.carryPending() {
		return nil
	}
	data, err := os.ReadFile(carriedFile)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	_ = os.Remove(carriedFile)
	var rec carryRecord
	if err := json.Unmarshal(data, &rec); err != nil {
		return err
	}
	if id, _ := m.cmdline.Get("baton.prev"); id != rec.ID {
		m.log.Info("carried connections are another shutdown's; ignored", "file_id", rec.ID, "baton.prev", id)
		return nil
	}
	in := &carryIn{rec: rec}
	flows := make([]tcprepair.Flow, 0, len(rec.Conns))
	for _, c := range rec.Conns {
		flows = append(flows, tcprepair.Flow{Local: c.TCP.Local, Remote: c.TCP.Remote})
	}
	lock, err := tcprepair.NewLock(lockTable)
	if err == nil {
		err = lock.DropFlows(flows, false)
	}
	if err != nil {
		m.log.Warn("restoring carried connections without a lock: a packet that arrives before its socket is rebuilt is answered with a reset", "err", err)
	} else {
		in.lock = lock
	}
	m.mu.Lock()
	m.carryIn = in
	m.mu.Unlock()
	return nil
}

// restoreCarried rebuilds each carried connection; one that cannot be rebuilt is lost alone,
// with the reason logged.
func (m *machine) restoreCarried() error {
	m.mu.Lock()
	in := m.carryIn
	m.carryIn = nil
	m.mu.Unlock()
	if in == nil {
		return nil
	}
	byService := map[string][]services.Carried{}
	restored := 0
	for _, c := range in.rec.Conns {
		fd, err := tcprepair.Restore(c.TCP)
		if err == nil {
			if err = tcprepair.Resume(fd); err != nil {
				unix.Close(fd)
			}
		}
		if err != nil {
			m.log.Warn("carried connection lost", "service", c.Service, "local", c.TCP.Local, "remote", c.TCP.Remote, "reason", err)
			continue
		}
		byService[c.Service] = append(byService[c.Service], services.Carried{Fd: fd, State: c.State})
		restored++
	}
	// Only now: every carried connection has its socket again.
	if in.lock != nil {
		if err := in.lock.Release(); err != nil {
			m.log.Error("carried connections stay locked", "err", err)
		}
	}
	for name, conns := range byService {
		if m.sv == nil || m.sv.Inherit(name, conns) != nil {
			m.log.Warn("carried connections lost: no such service", "service", name, "count", len(conns))
			for _, c := range conns {
				unix.Close(c.Fd)
			}
		}
	}
	m.log.Info("carried connections restored", "count", restored, "of", len(in.rec.Conns))
	return nil
}
