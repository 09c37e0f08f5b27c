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
