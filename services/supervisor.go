package services

import (
	"log/slog"
	"os"
	"time"

	"github.com/baton-init/baton/config"
	"github.com/baton-init/baton/system"
)

// Supervisor runs a set of services.
type Supervisor struct {
	log      *slog.Logger
	services []*Service // in start order
}

// New prepares the services of cfg, in dependency order. Output goes to stdout and stderr.
func New(cfg *config.Config, log *slog.Logger, r *system.Reaper, stdout, stderr *os.File) *Supervisor {
	sv := &Supervisor{log: log}
	for _, spec := range cfg.StartOrder() {
		sv.services = append(sv.services, newService(spec, log, r, stdout, stderr))
	}
	return sv
}

// StartReport is the outcome of starting one service.
type StartReport struct {
	Name string
	Took time.Duration
	Err  error
}

// StartAll starts each service in order, waiting for one to be started before the next, so
// "after" holds. A service that fails to start is reported and the others still start.
func (sv *Supervisor) StartAll() []StartReport {
	var out []StartReport
	for _, s := range sv.services {
		start := time.Now()
		s.launch()
		err := s.waitStarted()
		out = append(out, StartReport{Name: s.Spec.Name, Took: time.Since(start), Err: err})
	}
	return out
}

// StopAll stops the services in reverse start order and returns the names of those that had to
// be killed.
func (sv *Supervisor) StopAll() (killed []string) {
	for i := len(sv.services) - 1; i >= 0; i-- {
		s := sv.services[i]
		if s.Stop() {
			killed = append(killed, s.Spec.Name)
		}
	}
	return killed
}

// Service returns the named service, or nil.
func (sv *Supervisor) Service(name string) *Service {
	for _, s := range sv.services {
		if s.Spec.Name == name {
			return s
		}
	}
	return nil
}

// Statuses returns a snapshot of every service, in start order.
func (sv *Supervisor) Statuses() []Status {
	out := make([]Status, 0, len(sv.services))
	for _, s := range sv.services {
		out = append(out, s.Status())
	}
	return out
}
