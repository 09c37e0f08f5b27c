package services

import (
	"time"

	"github.com/baton-init/baton/handoff"
)

// Status is a snapshot of a service, as the control API shows it.
type Status struct {
	Name     string    `json:"name"`
	State    State     `json:"state"`
	Pid      int       `json:"pid,omitempty"`
	Exec     string    `json:"exec,omitempty"` // the binary it runs (or will run at its next start)
	Since    time.Time `json:"since,omitzero"` // start of the current run
	Uptime   string    `json:"uptime,omitempty"`
	Restarts int       `json:"restarts"`
	LastExit string    `json:"last_exit,omitempty"`
	Error    string    `json:"error,omitempty"`
	Status   string    `json:"status,omitempty"` // the service's own STATUS= line
	Type     string    `json:"type"`             // simple | forking | oneshot
	Ready    string    `json:"ready,omitempty"`  // started | notify (simple)
	// Completed: a oneshot whose last run exited successfully (requires accepts it as up).
	Completed bool `json:"completed,omitempty"`
	// HeldBy: stopped because this service, which it conflicts with, runs instead (Status
	// says since when: the boot, or an initctl start).
	HeldBy  string `json:"held_by,omitempty"`
	Restart string `json:"restart"`
	Cgroup  string `json:"cgroup,omitempty"`
	// NotifyDropped counts notify datagrams from processes outside the service.
	NotifyDropped int `json:"notify_dropped,omitempty"`
	// NotifyLate counts datagrams from a generation that was ending (the old version of an
	// upgrade, a service being stopped): accepted, not forged.
	NotifyLate int       `json:"notify_late,omitempty"`
	StartedAt  time.Time `json:"started_at,omitzero"` // first start this boot
	ReadyAt    time.Time `json:"ready_at,omitzero"`   // first ready this boot
	Upgrades   int       `json:"upgrades,omitempty"`
	MainPid    int       `json:"main_pid,omitempty"` // MAINPID= as the service reported it
	Reloading  bool      `json:"reloading,omitempty"`
	// Sockets are the sockets baton holds for the service; Stored its fd store.
	Sockets []SocketStatus     `json:"sockets,omitempty"`
	Stored  []handoff.StoredFD `json:"stored,omitempty"`
	// Generations lists both versions while an upgrade runs.
	Generations []GenerationStatus `json:"generations,omitempty"`
}

// SocketStatus is one held socket.
type SocketStatus struct {
	Name   string `json:"name"`
	Listen string `json:"listen"`
}

// GenerationStatus is one version of a service during an upgrade.
type GenerationStatus struct {
	Role  string    `json:"role"` // old or new
	Pid   int       `json:"pid"`
	Exec  string    `json:"exec"`
	Since time.Time `json:"since"`
	Ready bool      `json:"ready"`
}

// state is what status shows: a running service that said STOPPING=1 is stopping.
func (s *Service) state() State {
	if s.st.phase == pRunning && s.st.selfStopping {
		return Stopping
	}
	return phaseState[s.st.phase]
}

// statusNow is the loop's view, for publish; Uptime is filled in by Status.
func (s *Service) statusNow() Status {
	st := Status{Name: s.spec().Name, State: s.state(), Restarts: s.st.restarts, Status: s.st.statusMsg,
		Type: s.spec().Type, Ready: s.spec().Ready, Completed: s.st.completed, Restart: s.spec().Restart, Cgroup: s.st.cgroup, StartedAt: s.st.firstUp,
		ReadyAt: s.st.firstRdy, NotifyDropped: s.st.notifyDropped, NotifyLate: s.st.notifyLate,
		Upgrades: s.st.upgrades, MainPid: s.st.mainPid, Reloading: s.st.phase == pReloading, HeldBy: s.st.heldBy}
	st.Exec = s.spec().Exec[0]
	if g := s.st.cur; g != nil {
		st.Pid, st.Since, st.Exec = g.pid, g.started, g.exec
	}
	if c := s.cmdStatus(); c != "" {
		st.Status = c
	}
	if s.st.lastExit != nil {
		st.LastExit = s.st.lastExit.String()
	}
	if s.st.lastErr != nil {
		st.Error = s.st.lastErr.Error()
	}
	for _, h := range s.held {
		st.Sockets = append(st.Sockets, SocketStatus{Name: h.Spec.Name, Listen: h.Spec.Listen})
	}
	if s.store != nil {
		st.Stored = s.store.List()
	}
	if up := s.st.up; up != nil {
		old, nw, ready := s.st.cur, up.new, false
		if up.new == nil { // swapped: the new version is the main one now
			old, nw, ready = up.old, s.st.cur, true
		}
		for _, x := range []struct {
			role  string
			g     *generation
			ready bool
		}{{"old", old, true}, {"new", nw, ready}} {
			if x.g != nil {
				st.Generations = append(st.Generations, GenerationStatus{Role: x.role, Pid: x.g.pid, Exec: x.g.exec, Since: x.g.started, Ready: x.ready})
			}
		}
	}
	return st
}
