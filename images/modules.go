package images

import (
	"bufio"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/baton-init/baton/system/kmod"
)

// companions are modules a driver needs but does not declare. A virtio driver depends on the
// virtio core, not on a transport, yet without virtio_pci no virtio device appears on a PC or
// a cloud VM; the kernel cannot say so, so the builder carries it (loaded when the device is
// matched).
var companions = map[string][]string{
	"virtio": {"virtio_pci"},
}

// postLoad are soft dependencies the modules do not declare but that a mount asks for at once
// through request_module: vfat the kernel's default codepage and iocharset (Debian: 437, utf8),
// ext4 crc32c. Loading them right after their module spares two runs of the modprobe helper
// per mount.
var postLoad = map[string][]string{
	"vfat": {"nls_cp437", "nls_utf8"},
	"ext4": {"crc32c_generic"},
}

// ModuleSet is the kernel modules chosen for an image, with their index.
type ModuleSet struct {
	Dir   string // host directory lib/modules/<release>
	Index kmod.Index
}

// ResolveModules finds names (and everything they depend on) in the kernel module tree dir,
// which is lib/modules/<release> or a directory holding exactly one release.
func ResolveModules(dir string, names []string) (*ModuleSet, error) {
	dir, release, err := moduleRelease(dir)
	if err != nil {
		return nil, err
	}
	paths, err := modulePaths(dir)
	if err != nil {
		return nil, err
	}
	set := &ModuleSet{Dir: dir, Index: kmod.Index{Release: release, Modules: map[string]kmod.Module{}}}
	set.Index.Builtin = readBuiltin(dir)
	var add func(name, from string) error
	add = func(name, from string) error {
		name = kmod.Name(name)
		if _, done := set.Index.Modules[name]; done || set.Index.IsBuiltin(name) {
			return nil
		}
		rel, ok := paths[name]
		if !ok {
			if from != "" {
				return fmt.Errorf("module %s (a dependency of %s) not found under %s", name, from, dir)
			}
			return fmt.Errorf("module %s not found under %s (kernel %s)", name, dir, release)
		}
		mi, err := kmod.ReadModinfo(filepath.Join(dir, rel))
		if err != nil {
			return err
		}
		post := append(append([]string(nil), mi.Post...), postLoad[name]...)
		set.Index.Modules[name] = kmod.Module{Path: rel, Depends: mi.Depends, Aliases: mi.Aliases, Pre: mi.Pre, Post: post}
		for _, d := range mi.Depends {
			if err := add(d, name); err != nil {
				return err
			}
		}
		for _, soft := range append(append([]string(nil), mi.Pre...), post...) {
			if _, ok := paths[kmod.Name(soft)]; ok {
				_ = add(soft, name) // a soft dependency the kernel tree lacks is no error
			}
		}
		for _, c := range companions[name] {
			if err := add(c, name); err != nil {
				return err
			}
		}
		return nil
	}
	for _, n := range names {
		if err := add(n, ""); err != nil {
			return nil, err
		}
	}
	return set, nil
}

// moduleRelease accepts lib/modules/<release> itself or a parent with one release in it.
func moduleRelease(dir string) (string, string, error) {
	if _, err := os.Stat(filepath.Join(dir, "kernel")); err == nil {
		return dir, filepath.Base(dir), nil
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return "", "", fmt.Errorf("kernel modules: %w", err)
	}
	var found []string
	for _, e := range ents {
		if _, err := os.Stat(filepath.Join(dir, e.Name(), "kernel")); err == nil {
			found = append(found, e.Name())
		}
	}
	if len(found) != 1 {
		return "", "", fmt.Errorf("kernel modules: %s holds %d kernel releases (%s); name one of lib/modules/<release>", dir, len(found), strings.Join(found, ", "))
	}
	return filepath.Join(dir, found[0]), found[0], nil
}

// modulePaths maps module names to .ko paths relative to dir. Names come from file names
// (which is what they are in-tree); the .modinfo is read only for modules actually chosen.
func modulePaths(dir string) (map[string]string, error) {
	paths := map[string]string{}
	err := filepath.WalkDir(filepath.Join(dir, "kernel"), func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		switch {
		case strings.HasSuffix(p, ".ko"):
			rel, _ := filepath.Rel(dir, p)
			paths[kmod.Name(strings.TrimSuffix(d.Name(), ".ko"))] = rel
		case strings.HasSuffix(p, ".ko.xz"), strings.HasSuffix(p, ".ko.zst"), strings.HasSuffix(p, ".ko.gz"):
			return fmt.Errorf("%s is compressed; baton loads only uncompressed modules", p)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("kernel modules: %w", err)
	}
	return paths, nil
}

// readBuiltin reads modules.builtin (paths of modules compiled into the kernel).
func readBuiltin(dir string) []string {
	f, err := os.Open(filepath.Join(dir, "modules.builtin"))
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		name := strings.TrimSuffix(filepath.Base(strings.TrimSpace(sc.Text())), ".ko")
		if name != "" {
			out = append(out, kmod.Name(name))
		}
	}
	sort.Strings(out)
	return out
}

// Names returns the module names in the set, sorted.
func (s *ModuleSet) Names() []string {
	out := make([]string, 0, len(s.Index.Modules))
	for n := range s.Index.Modules {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}
