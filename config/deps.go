package config

import (
	"fmt"
	"slices"
)

// validateConflicts refuses a service that conflicts with one it also requires or wants:
// starting it would stop what it needs, and starting that would stop it.
func validateConflicts(k string, s Service) []problem {
	var ps []problem
	for _, c := range s.Conflicts {
		for _, l := range []struct {
			key  string
			list []string
		}{{"requires", s.Requires}, {"wants", s.Wants}} {
			if slices.Contains(l.list, c) {
				ps = append(ps, problem{key: k + ".conflicts", msg: fmt.Sprintf(
					"service %s conflicts with %s and %s it: starting one would stop the other", quote(s.Name), quote(c), l.key)})
			}
		}
	}
	return ps
}

// ConflictsWith lists the services that starting name stops: those it names in conflicts and
// those that name it (systemd's Conflicts= works both ways).
func (c *Config) ConflictsWith(name string) []string {
	var out []string
	for _, s := range c.Service {
		switch {
		case s.Name == name:
			for _, o := range s.Conflicts {
				if !slices.Contains(out, o) {
					out = append(out, o)
				}
			}
		case slices.Contains(s.Conflicts, name) && !slices.Contains(out, s.Name):
			out = append(out, s.Name)
		}
	}
	return out
}

// HeldByConflict lists the services the boot does not start because of a conflict, each with
// the service it yields to. systemd starts one side of a Conflicts= in a transaction; baton's
// rule is the order of the file: of two conflicting services the one listed first starts. A
// service listed later is held when it conflicts with one listed before it that is not held
// itself, so of a chain a–b–c (a conflicts with b, b with c) a and c start and b is held.
func (c *Config) HeldByConflict() map[string]string {
	held := map[string]string{}
	starts := map[string]bool{}
	for _, s := range c.Service {
		for _, o := range c.ConflictsWith(s.Name) {
			if starts[o] { // listed before s, and starts
				held[s.Name] = o
				break
			}
		}
		if _, ok := held[s.Name]; !ok {
			starts[s.Name] = true
		}
	}
	return held
}
