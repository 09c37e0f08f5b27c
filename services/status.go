package services

import "time"

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
	return st
}
