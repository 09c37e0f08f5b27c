package services

import (
	"fmt"
	"reflect"

	"github.com/baton-init/baton/config"
)

// ReloadReport says what applying a new config did to each service.
type ReloadReport struct {
	Unchanged []string `json:"unchanged,omitempty"` // same config: same pid, untouched
	Upgraded  []string `json:"upgraded,omitempty"`  // exec or env changed: new version on the held sockets
	Restarted []string `json:"restarted,omitempty"` // other settings changed: stopped, started with them
	Replaced  []string `json:"replaced,omitempty"`  // sockets, fd store or notify use changed: rebuilt
	Started   []string `json:"started,omitempty"`   // added
	Held      []string `json:"held,omitempty"`      // added, not started: conflicts with one that runs
	Stopped   []string `json:"stopped,omitempty"`   // removed
	// Configured: changed while not running; the new config applies at its next start.
	Configured []string `json:"configured,omitempty"`
	Errors     []string `json:"errors,omitempty"` // "name: what failed"; the rest was still applied
}

// change is how a service's config changed.
type change int

const (
	same change = iota
	execEnv
	settings
	resources // what newService builds: sockets, fd store, notify socket
)

func classify(old, new config.Service) change {
	if reflect.DeepEqual(old, new) {
		return same
	}
	if !reflect.DeepEqual(old.Socket, new.Socket) || old.FDStoreMax != new.FDStoreMax || usesNotify(old) != usesNotify(new) {
		return resources
	}
	o := old
	o.Exec, o.Env = new.Exec, new.Env
	if reflect.DeepEqual(o, new) && new.Type == config.TypeSimple { // only simple ones upgrade
		return execEnv
	}
	return settings
}

// Reload applies cfg (already validated) with the least disruption, as systemd's daemon-reload
// followed by applying it would: removed services are stopped, added ones started, a service
// whose exec or env changed is upgraded over its held sockets (no refused connection), one
// whose other settings changed is restarted with them, and one whose sockets changed is
// rebuilt; unchanged services keep their processes. A service that is not running takes its
// new config at its next start.
func (sv *Supervisor) Reload(cfg *config.Config) ReloadReport {
	sv.reloadMu.Lock()
	defer sv.reloadMu.Unlock()
	var rep ReloadReport
	fail := func(name string, err error) { rep.Errors = append(rep.Errors, fmt.Sprintf("%s: %v", name, err)) }
	old := sv.set.Load()
	order := cfg.StartOrder()
	wanted := map[string]bool{}
	for _, spec := range order {
		wanted[spec.Name] = true
	}
	for i := len(old.list) - 1; i >= 0; i-- { // removed: stopped in reverse order
		if s := old.list[i]; !wanted[s.spec().Name] {
			if _, err := sv.StopReport(s.spec().Name); err != nil {
				fail(s.spec().Name, err)
			}
			rep.Stopped = append(rep.Stopped, s.spec().Name)
		}
	}

	next := &serviceSet{byName: map[string]*Service{}, held: cfg.HeldByConflict()}
	type todo struct {
		s     *Service
		spec  config.Service
		how   change
		was   State
		added bool
	}
	var work []todo
	for _, spec := range order {
		s, ok := old.byName[spec.Name]
		if !ok {
			ns, err := newService(spec, sv.env)
			if err != nil {
				fail(spec.Name, err)
				continue
			}
			next.list, next.byName[spec.Name] = append(next.list, ns), ns
			work = append(work, todo{s: ns, spec: spec, was: Stopped, added: true})
			continue
		}
		t := todo{s: s, spec: spec, how: classify(*s.spec(), spec), was: s.Status().State}
		if t.how == resources { // its sockets go now, so the new ones can be bound
			if _, err := sv.StopReport(spec.Name); err != nil {
				fail(spec.Name, err)
			}
			s.close()
			ns, err := newService(spec, sv.env)
			if err != nil {
				fail(spec.Name, err)
				continue
			}
			t.s = ns
		}
		next.list, next.byName[spec.Name] = append(next.list, t.s), t.s
		work = append(work, t)
	}
	sv.set.Store(next)
	for _, s := range old.list {
		if !wanted[s.spec().Name] {
			s.close()
		}
	}

	for _, t := range work {
		name, spec, active := t.spec.Name, t.spec, t.was == Running || t.was == Starting
		var err error
		switch {
		case t.added:
			if by := sv.upConflict(name); by != "" {
				rep.Held = append(rep.Held, name)
				t.s.request(request{op: opHold, other: by, err: fmt.Errorf("not started: conflicts with %s, which runs", by)})
				break
			}
			rep.Started = append(rep.Started, name)
			if err = sv.requiresUp(t.s); err == nil {
				err = t.s.request(request{op: opStart}).err
			} else {
				t.s.request(request{op: opFail, err: err})
			}
		case t.how == same:
			rep.Unchanged = append(rep.Unchanged, name)
		case t.how == resources:
			rep.Replaced = append(rep.Replaced, name)
			if active {
				err = t.s.request(request{op: opStart}).err
			}
		case !active:
			rep.Configured = append(rep.Configured, name)
			err = t.s.request(request{op: opConfigure, spec: &spec}).err
		case t.how == execEnv && t.was == Running:
			rep.Upgraded = append(rep.Upgraded, name)
			err = t.s.request(request{op: opUpgrade, spec: &spec}).err
		default:
			rep.Restarted = append(rep.Restarted, name)
			err = t.s.request(request{op: opRestart, spec: &spec}).err
		}
		if err != nil {
			fail(name, err)
		}
	}
	return rep
}

// Preview says what Reload(cfg) would do, without doing it.
func (sv *Supervisor) Preview(cfg *config.Config) ReloadReport {
	var rep ReloadReport
	old := sv.set.Load()
	wanted := map[string]bool{}
	for _, spec := range cfg.StartOrder() {
		wanted[spec.Name] = true
		s, ok := old.byName[spec.Name]
		if !ok {
			rep.Started = append(rep.Started, spec.Name)
			continue
		}
		st := s.Status().State
		active := st == Running || st == Starting
		switch how := classify(*s.spec(), spec); {
		case how == same:
			rep.Unchanged = append(rep.Unchanged, spec.Name)
		case how == resources:
			rep.Replaced = append(rep.Replaced, spec.Name)
		case !active:
			rep.Configured = append(rep.Configured, spec.Name)
		case how == execEnv && st == Running:
			rep.Upgraded = append(rep.Upgraded, spec.Name)
		default:
			rep.Restarted = append(rep.Restarted, spec.Name)
		}
	}
	for i := len(old.list) - 1; i >= 0; i-- {
		if n := old.list[i].spec().Name; !wanted[n] {
			rep.Stopped = append(rep.Stopped, n)
		}
	}
	return rep
}

// Config is the services' configs as they run now, in start order.
func (sv *Supervisor) Config() []config.Service {
	var out []config.Service
	for _, s := range sv.services() {
		out = append(out, s.Spec())
	}
	return out
}
