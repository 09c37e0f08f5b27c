// Package kmod finds, orders and loads kernel modules the way modprobe and udev do, from an
// index the image builder writes, so an appliance needs neither kmod nor udev.
package kmod

import (
	"encoding/json"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
)

// IndexFile is the index's name inside /lib/modules/<release>/.
const IndexFile = "baton-modules.json"

// Index describes the modules an image carries for one kernel release.
type Index struct {
	Release string            `json:"release"`
	Modules map[string]Module `json:"modules"`
	// Builtin lists modules compiled into the kernel: asking for one is not an error.
	Builtin []string `json:"builtin,omitempty"`

	byBus    map[string][]aliasOf // alias patterns by the bus before their first ':'
	byPrefix map[string][]aliasOf // patterns whose bus part has a wildcard ("acpi*"), by what precedes it
}

type aliasOf struct{ pattern, module string }

// Module is one .ko file and what the kernel needs to know before loading it.
type Module struct {
	Path    string   `json:"path"` // relative to /lib/modules/<release>/
	Depends []string `json:"depends,omitempty"`
	Aliases []string `json:"aliases,omitempty"`
	// Pre and Post are soft dependencies (modprobe's softdep): loaded before and after the
	// module when they are in the image, and no error when they are not.
	Pre  []string `json:"pre,omitempty"`
	Post []string `json:"post,omitempty"`
}

// Name normalises a module name: the kernel treats '-' and '_' alike.
func Name(s string) string { return strings.ReplaceAll(s, "-", "_") }

// Dir is where the modules for release live below root.
func Dir(root, release string) string { return filepath.Join(root, "lib/modules", release) }

// ReadIndex loads the index for release below root.
func ReadIndex(root, release string) (*Index, error) {
	p := filepath.Join(Dir(root, release), IndexFile)
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, fmt.Errorf("module index: %w (does the image carry modules for kernel %s?)", err, release)
	}
	var ix Index
	if err := json.Unmarshal(b, &ix); err != nil {
		return nil, fmt.Errorf("module index %s: %w", p, err)
	}
	return &ix, nil
}

// IsBuiltin reports whether name is compiled into the kernel.
func (ix *Index) IsBuiltin(name string) bool {
	name = Name(name)
	for _, b := range ix.Builtin {
		if b == name {
			return true
		}
	}
	return false
}

// Order returns names and everything they depend on, each module after its dependencies,
// in a stable order. A module that is neither in the index nor built in is an error naming it
// and who asked for it.
func (ix *Index) Order(names ...string) ([]string, error) {
	var out []string
	state := map[string]int{} // 1 visiting, 2 done
	var visit func(name, from string) error
	visit = func(name, from string) error {
		name = Name(name)
		switch state[name] {
		case 1:
			return fmt.Errorf("module %s: dependency loop", name)
		case 2:
			return nil
		}
		m, ok := ix.Modules[name]
		if !ok {
			if ix.IsBuiltin(name) {
				state[name] = 2
				return nil
			}
			if from != "" {
				return fmt.Errorf("module %s (needed by %s) is not in the module set", name, from)
			}
			return fmt.Errorf("module %s is not in the module set", name)
		}
		state[name] = 1
		for _, d := range m.Depends {
			if err := visit(d, name); err != nil {
				return err
			}
		}
		ix.visitSoft(m.Pre, name, visit)
		state[name] = 2
		out = append(out, name)
		ix.visitSoft(m.Post, name, visit)
		return nil
	}
	for _, n := range names {
		if err := visit(n, ""); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// needs lists what must be loaded before name: its dependencies and the soft ones before it
// that the image carries (as Order puts them).
func (ix *Index) needs(name string) []string {
	m := ix.Modules[name]
	out := make([]string, 0, len(m.Depends)+len(m.Pre))
	for _, d := range m.Depends {
		out = append(out, Name(d))
	}
	for _, p := range m.Pre {
		if _, ok := ix.Modules[Name(p)]; ok {
			out = append(out, Name(p))
		}
	}
	return out
}

// visitSoft orders soft dependencies that the image carries; the others are skipped.
func (ix *Index) visitSoft(names []string, from string, visit func(name, from string) error) {
	for _, n := range names {
		if _, ok := ix.Modules[Name(n)]; ok {
			_ = visit(n, from)
		}
	}
}

// Match returns the modules whose alias patterns match a device's modalias (or a name the
// kernel asks for, such as "crypto-crc32c"), sorted by name.
func (ix *Index) Match(modalias string) []string {
	if ix.byBus == nil {
		ix.indexAliases()
	}
	bus, _, _ := strings.Cut(modalias, ":")
	seen := map[string]bool{}
	var out []string
	// Only patterns of the same bus (or whose bus part starts like it, before a wildcard) can
	// match: a boot matches a hundred devices against thousands of patterns otherwise.
	cands := [][]aliasOf{ix.byBus[bus]}
	for prefix, as := range ix.byPrefix {
		if strings.HasPrefix(bus, prefix) {
			cands = append(cands, as)
		}
	}
	for _, cands := range cands {
		for _, a := range cands {
			if seen[a.module] {
				continue
			}
			if ok, _ := path.Match(a.pattern, modalias); ok {
				seen[a.module] = true
				out = append(out, a.module)
			}
		}
	}
	sort.Strings(out)
	return out
}

// Buses are the buses the index has aliases for (their sysfs names, which modaliases begin
// with), leaving out those whose modules all satisfy done; all is true when a pending pattern
// could match any bus. No buses and not all means there is nothing left to scan for.
func (ix *Index) Buses(done func(module string) bool) (buses []string, all bool) {
	if ix.byBus == nil {
		ix.indexAliases()
	}
	pending := func(as []aliasOf) bool {
		for _, a := range as {
			if done == nil || !done(a.module) {
				return true
			}
		}
		return false
	}
	var out []string
	for b, as := range ix.byBus {
		if pending(as) {
			out = append(out, b)
		}
	}
	for p, as := range ix.byPrefix {
		if !pending(as) {
			continue
		}
		if p == "" {
			return nil, true // a pattern for any bus
		}
		out = append(out, p+"*")
	}
	sort.Strings(out)
	return out, false
}

func (ix *Index) indexAliases() {
	ix.byBus, ix.byPrefix = map[string][]aliasOf{}, map[string][]aliasOf{}
	for name, m := range ix.Modules {
		for _, a := range m.Aliases {
			bus, _, _ := strings.Cut(a, ":")
			if i := strings.IndexAny(bus, "*?["); i >= 0 {
				ix.byPrefix[bus[:i]] = append(ix.byPrefix[bus[:i]], aliasOf{a, name})
				continue
			}
			ix.byBus[bus] = append(ix.byBus[bus], aliasOf{a, name})
		}
	}
}

// Resolve turns what modprobe is asked for — a module name or an alias — into module names.
func (ix *Index) Resolve(what string) []string {
	if _, ok := ix.Modules[Name(what)]; ok {
		return []string{Name(what)}
	}
	if ix.IsBuiltin(what) {
		return nil
	}
	return ix.Match(what)
}
