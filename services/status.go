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
	Since    time.Time `json:"since,omitzero"` // start of the current run
	Uptime   string    `json:"uptime,omitempty"`
	Restarts int       `json:"restarts"`
	LastExit string    `json:"last_exit,omitempty"`
	Error    string    `json:"error,omitempty"`
	Status   string    `json:"status,omitempty"` // the service's own STATUS= line
	Ready    string    `json:"ready"`            // started | notify
	Restart  string    `json:"restart"`
	Cgroup   string    `json:"cgroup,omitempty"`
	// NotifyDropped counts notify datagrams from processes outside the service.
	NotifyDropped int       `json:"notify_dropped,omitempty"`
	StartedAt     time.Time `json:"started_at,omitzero"` // first start this boot
	ReadyAt       time.Time `json:"ready_at,omitzero"`   // first ready this boot
	Upgrades      int       `json:"upgrades,omitempty"`
	MainPid       int       `json:"main_pid,omitempty"` // MAINPID= as the service reported it
	Reloading     bool      `json:"reloading,omitempty"`
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
	Since time.Time `json:"since"`
	Ready bool      `json:"ready"`
}

// Status returns a snapshot.
func (s *Service) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.statusLocked()
}

func (s *Service) statusLocked() Status {
	st := Status{Name: s.Spec.Name, State: s.state, Pid: s.pid, Restarts: s.restarts, Status: s.statusMsg,
		Ready: s.Spec.Ready, Restart: s.Spec.Restart, Cgroup: s.cgroup, StartedAt: s.firstUp, ReadyAt: s.firstRdy, NotifyDropped: s.notifyDropped}
	if s.pid != 0 {
		st.Since = s.started
		st.Uptime = time.Since(s.started).Round(time.Second).String()
	}
	if s.lastExit != nil {
		st.LastExit = s.lastExit.String()
	}
	if s.lastErr != nil {
		st.Error = s.lastErr.Error()
	}
	st.Upgrades, st.MainPid, st.Reloading = s.upgrades, s.mainPid, s.reloading
	for _, h := range s.held {
		st.Sockets = append(st.Sockets, SocketStatus{Name: h.Spec.Name, Listen: h.Spec.Listen})
	}
	st.Stored = s.store.List()
	if s.next != nil && s.cur != nil {
		st.Generations = []GenerationStatus{
			{Role: "old", Pid: s.cur.pid, Since: s.cur.started, Ready: true},
			{Role: "new", Pid: s.next.pid, Since: s.next.started, Ready: s.next.ready},
		}
	}
	return st
}
