package services

import (
	"fmt"
	"slices"
)

// wants and conflicts (systemd's Wants= and Conflicts=) act across services, so they are the
// supervisor's, not a service loop's: before an explicit start (initctl start), what conflicts
// with the service is stopped and held, and what it wants is started, its failure logged and
// ignored. At boot, of two conflicting services the one listed first starts and the other is
// held (Supervisor.startAtBoot); a service reload-config adds is held when one it conflicts
// with is up. A held service is stopped, with the conflict as its status (Status.HeldBy).
// The order they give (wants orders like after) is config.StartOrder's and the boot's.

// beforeStart stops and holds the services that conflict with s and starts those it wants.
// A failed one stays failed: its failure is news, not the conflict.
func (sv *Supervisor) beforeStart(s *Service) {
	name := s.spec().Name
	for _, c := range sv.conflicting(name) {
		st := c.Status().State
		if st == Failed {
			continue
		}
		if st != Stopped {
			sv.log.Info("stopping a conflicting service", "service", c.spec().Name, "to_start", name)
			if _, err := sv.StopReport(c.spec().Name); err != nil {
				sv.log.Warn("stop of a conflicting service failed", "service", c.spec().Name, "err", err)
			}
		}
		c.request(request{op: opHold, other: name, err: fmt.Errorf("stopped: conflicts with %s, which was started", name)})
	}
	for _, w := range s.spec().Wants {
		if err := sv.Start(w); err != nil {
			sv.log.Warn("a wanted service did not start; starting anyway", "service", name, "wants", w, "err", err)
		}
	}
}

// conflicting lists the services starting name stops: those it names in conflicts and those
// that name it (Conflicts= works both ways).
func (sv *Supervisor) conflicting(name string) []*Service {
	var out []*Service
	var mine []string
	if me, ok := sv.lookup(name); ok {
		mine = me.spec().Conflicts
	}
	for _, o := range sv.services() {
		spec := o.spec()
		if spec.Name != name && (slices.Contains(spec.Conflicts, name) || slices.Contains(mine, spec.Name)) {
			out = append(out, o)
		}
	}
	return out
}

// upConflict names a service name conflicts with that is not stopped or failed, or "".
func (sv *Supervisor) upConflict(name string) string {
	for _, c := range sv.conflicting(name) {
		if st := c.Status().State; st != Stopped && st != Failed {
			return c.spec().Name
		}
	}
	return ""
}
