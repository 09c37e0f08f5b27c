package control

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"strings"

	"github.com/baton-init/baton/system"
)

// initctl's commands for systemctl hands: is-active, is-failed, kill, show, cat,
// list-dependencies.

// exitStatus ends initctl with a code and no message: is-active and is-failed answer by it.
type exitStatus int

func (e exitStatus) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

// isState prints each service's state as systemctl does and exits 0 if any of them is in one
// of the states ok accepts, else notOK (systemctl: is-active 3, is-failed 1).
func (ic *initctl) isState(cmd string, ok func(string) bool, notOK int) func([]string) error {
	return func(args []string) error {
		fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
		quiet := fs.Bool("quiet", false, "")
		fs.BoolVar(quiet, "q", false, "")
		names, err := parse(fs, args)
		if err != nil {
			return err
		}
		if len(names) == 0 {
			return &usageError{cmd + " needs a service name"}
		}
		any := false
		for _, name := range names {
			st, err := ic.c.Service(name)
			state := systemdState(st.State)
			var ae *APIError
			switch {
			case errors.As(err, &ae) && ae.Code == 404:
				state = "inactive" // systemctl's answer for a unit it does not know
			case err != nil:
				return err
			}
			any = any || ok(state)
			if !*quiet {
				fmt.Fprintln(ic.out, state)
			}
		}
		if !any {
			return exitStatus(notOK)
		}
		return nil
	}
}

func isActive(state string) bool { return state == "active" || state == "reloading" }
func isFailed(state string) bool { return state == "failed" }

func (ic *initctl) kill(args []string) error {
	fs := flag.NewFlagSet("kill", flag.ContinueOnError)
	sig := fs.String("signal", "SIGTERM", "")
	fs.StringVar(sig, "s", "SIGTERM", "")
	main := fs.Bool("main", false, "")
	names, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(names) == 0 {
		return &usageError{"kill needs a service name"}
	}
	for _, name := range names {
		if _, err := ic.c.Kill(name, *sig, *main); err != nil {
			return err
		}
	}
	return nil
}

func (ic *initctl) show(args []string) error {
	fs := flag.NewFlagSet("show", flag.ContinueOnError)
	asJSON := fs.Bool("json", false, "")
	prop := fs.String("p", "", "")
	fs.StringVar(prop, "property", "", "")
	names, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(names) != 1 {
		return &usageError{"show needs exactly one service name"}
	}
	sc, err := ic.c.ServiceConfig(names[0])
	if err != nil {
		return err
	}
	want := map[string]bool{}
	for _, p := range strings.Split(*prop, ",") {
		if p != "" {
			want[p] = true
		}
	}
	obj := map[string]any{}
	for _, s := range sc.Settings {
		if len(want) > 0 && !want[s.Key] {
			continue
		}
		if *asJSON {
			obj[s.Key] = s.Value
			continue
		}
		v := s.Value
		if _, isString := v.(string); !isString {
			b, _ := json.Marshal(v)
			v = string(b)
		}
		fmt.Fprintf(ic.out, "%s=%s\n", s.Key, system.EscapeControls(fmt.Sprint(v)))
	}
	if *asJSON {
		enc := json.NewEncoder(ic.out)
		enc.SetIndent("", "  ")
		return enc.Encode(obj)
	}
	return nil
}

func (ic *initctl) cat(args []string) error {
	if len(args) == 0 {
		return &usageError{"cat needs a service name"}
	}
	for i, name := range args {
		u, err := ic.c.ServiceUnit(name)
		if err != nil {
			return err
		}
		if i > 0 {
			fmt.Fprintln(ic.out)
		}
		fmt.Fprintf(ic.out, "# %s\n%s", u.File, u.Text)
	}
	return nil
}

// listDependencies prints what a service is ordered after (after), needs (requires) and pulls
// in (wants), as a tree: systemctl list-dependencies.
func (ic *initctl) listDependencies(args []string) error {
	if len(args) != 1 {
		return &usageError{"list-dependencies needs exactly one service name"}
	}
	deps := map[string][3][]string{} // name → after, requires, wants
	var load func(name string) error
	load = func(name string) error {
		if _, done := deps[name]; done {
			return nil
		}
		sc, err := ic.c.ServiceConfig(name)
		if err != nil {
			return err
		}
		var d [3][]string
		for _, s := range sc.Settings {
			switch s.Key {
			case "after":
				d[0] = strs(s.Value)
			case "requires":
				d[1] = strs(s.Value)
			case "wants":
				d[2] = strs(s.Value)
			}
		}
		deps[name] = d
		for _, n := range append(append(d[0], d[1]...), d[2]...) {
			if err := load(n); err != nil {
				return err
			}
		}
		return nil
	}
	if err := load(args[0]); err != nil {
		return err
	}
	fmt.Fprintln(ic.out, args[0])
	var walk func(name, indent string, seen map[string]bool)
	walk = func(name, indent string, seen map[string]bool) {
		type edge struct{ kind, to string }
		var edges []edge
		for _, n := range deps[name][1] {
			edges = append(edges, edge{"requires", n})
		}
		for _, n := range deps[name][2] {
			edges = append(edges, edge{"wants", n})
		}
		for _, n := range deps[name][0] {
			edges = append(edges, edge{"after", n})
		}
		for i, e := range edges {
			branch, next := "├─", "│ "
			if i == len(edges)-1 {
				branch, next = "└─", "  "
			}
			fmt.Fprintf(ic.out, "%s%s%s (%s)\n", indent, branch, e.to, e.kind)
			if !seen[e.to] { // the config has no cycles; a diamond is printed once per path
				seen[e.to] = true
				walk(e.to, indent+next, seen)
				delete(seen, e.to)
			}
		}
	}
	walk(args[0], "", map[string]bool{args[0]: true})
	return nil
}

func strs(v any) []string {
	l, _ := v.([]any)
	out := make([]string, 0, len(l))
	for _, x := range l {
		if s, ok := x.(string); ok {
			out = append(out, s)
		}
	}
	return out
}
