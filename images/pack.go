package images

import (
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"

	"github.com/baton-init/baton/config"
)

// packer adds the build host's files to an image and records who needed each one.
type packer struct {
	img    *Initramfs
	report *Report
}

// hostFile packs the host's regular file host at guest. Packing one path twice from two
// different files is an error: one of the two would silently lose.
func (p *packer) hostFile(g *Group, guest, host, kind string, perm fs.FileMode) error {
	guest = clean(guest)
	if prev, ok := p.img.sources[guest]; ok && prev != host {
		return fmt.Errorf("%s is packed twice, from %s and from %s", guest, prev, host)
	}
	st, err := os.Stat(host)
	if err != nil {
		return fmt.Errorf("image file %s: %w", guest, err)
	}
	if perm == 0 {
		perm = st.Mode().Perm()
	}
	if err := p.img.AddFile(guest, host, uint64(perm)); err != nil {
		return err
	}
	p.report.add(g, Item{Path: guest, From: host, Kind: kind, Size: st.Size()})
	return nil
}

// sameAsHost packs the host's path at the same path in the image: a symbolic link as a link
// plus what it points to, so the loader finds a library by either name.
func (p *packer) sameAsHost(g *Group, host, kind string) error {
	for hops := 0; hops < 40; hops++ { // the kernel's own limit on a chain of links
		st, err := os.Lstat(host)
		if err != nil {
			return err
		}
		if st.Mode()&fs.ModeSymlink == 0 {
			return p.hostFile(g, host, host, kind, 0)
		}
		target, err := os.Readlink(host)
		if err != nil {
			return err
		}
		p.img.AddSymlink(host, target)
		p.report.add(g, Item{Path: host, From: target, Kind: "link"})
		if !path.IsAbs(target) {
			target = path.Join(path.Dir(host), target)
		}
		host = target
	}
	return fmt.Errorf("%s: too many levels of symbolic links", host)
}

// runnable packs what the kernel needs to run the host file packed at guest: for a dynamic
// ELF file, its interpreter and shared libraries; for a script, its interpreter (and what
// that needs). A script whose interpreter cannot be packed is refused with the reason.
func (p *packer) runnable(g *Group, guest, host string, scriptsToo bool) error {
	kind, err := inspect(host)
	if err != nil {
		return err
	}
	switch kind {
	case kindDynamic:
		interp, libs, err := libraries(host)
		if err != nil {
			return err
		}
		// The interpreter first: its target (ld.so is a link on Debian) is reported as such.
		if err := p.sameAsHost(g, interp, "interpreter"); err != nil {
			return fmt.Errorf("interpreter of %s: %w", guest, err)
		}
		for _, l := range libs {
			if err := p.sameAsHost(g, l, "library"); err != nil {
				return fmt.Errorf("library of %s: %w", guest, err)
			}
		}
	case kindScript:
		if !scriptsToo {
			return nil
		}
		interp, err := shebang(guest, host)
		if err != nil {
			return err
		}
		if src, ok := p.img.sources[clean(interp)]; ok {
			return p.interpreter(g, guest, src)
		}
		if p.img.Has(interp) {
			return nil // a link or a file the config put there itself
		}
		if _, err := os.Stat(interp); err != nil {
			return fmt.Errorf("%s is a script for %s, which this machine lacks: %w", guest, interp, err)
		}
		if err := p.sameAsHost(g, interp, "interpreter"); err != nil {
			return err
		}
		resolved, err := filepath.EvalSymlinks(interp)
		if err != nil {
			return err
		}
		return p.interpreter(g, guest, resolved)
	}
	return nil
}

// interpreter packs what a script's interpreter needs; an interpreter that is a script too
// is refused (the kernel allows a few levels, but each would need its own answer here).
func (p *packer) interpreter(g *Group, script, host string) error {
	if kind, _ := inspect(host); kind == kindScript {
		return fmt.Errorf("%s is a script whose interpreter %s is a script too: name a binary interpreter", script, host)
	}
	return p.runnable(g, host, host, false)
}

// files packs a service's files entry: src (relative: to the config's directory) at dst. A
// directory is packed whole: its symbolic links as links, its dynamic ELF files (plug-in
// modules, helpers) with their libraries.
func (p *packer) files(g *Group, f config.File, configDir string) error {
	src := f.Src
	if !filepath.IsAbs(src) {
		src = filepath.Join(configDir, src)
	}
	st, err := os.Stat(src)
	if err != nil {
		return fmt.Errorf("files: %w", err)
	}
	if !st.IsDir() {
		if err := p.hostFile(g, f.Dst, src, "file", 0); err != nil {
			return err
		}
		return p.runnable(g, f.Dst, src, false)
	}
	tree := Item{Path: clean(f.Dst), From: src, Kind: "files"}
	var elves []string
	err = filepath.WalkDir(src, func(host string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, host)
		guest := path.Join(clean(f.Dst), filepath.ToSlash(rel))
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			p.img.AddDir(guest, uint64(info.Mode().Perm()))
		case d.Type()&fs.ModeSymlink != 0:
			target, err := os.Readlink(host)
			if err != nil {
				return err
			}
			p.img.AddSymlink(guest, target)
		case d.Type().IsRegular():
			if prev, ok := p.img.sources[guest]; ok && prev != host {
				return fmt.Errorf("%s is packed twice, from %s and from %s", guest, prev, host)
			}
			if err := p.img.AddFile(guest, host, uint64(info.Mode().Perm())); err != nil {
				return err
			}
			p.report.owner[guest] = g.Name
			tree.Files++
			tree.Size += info.Size()
			elves = append(elves, host)
		default:
			return fmt.Errorf("files: %s is a %s, not a file, directory or link", host, info.Mode().Type())
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("files %s: %w", src, err)
	}
	p.report.add(g, tree)
	for _, host := range elves {
		if err := p.runnable(g, host, host, false); err != nil {
			return err
		}
	}
	return nil
}

// serviceBinary finds and packs the program a service runs (exec[0]): a file already in the
// image (-file, or the service's files), else -bindir's file of the same base name, else the
// build host's own file at that path (a Debian daemon, say). Then what it needs to run.
func (p *packer) serviceBinary(g *Group, s config.Service, binDir string) error {
	bin := clean(s.Exec[0])
	host, ok := p.img.sources[bin]
	switch {
	case ok:
		p.report.add(g, Item{Path: bin, From: host, Kind: "binary", Size: p.img.size(bin)})
	case p.img.Has(bin):
		return nil // a link the image makes itself (/bin/initctl)
	default:
		candidates := []string{bin}
		if binDir != "" {
			candidates = []string{filepath.Join(binDir, path.Base(bin)), bin}
		}
		for _, c := range candidates {
			if st, err := os.Stat(c); err == nil && st.Mode().IsRegular() {
				host = c
				break
			}
		}
		if host == "" {
			where := "this machine has no " + bin
			if binDir != "" {
				where = fmt.Sprintf("-bindir %s has no %s and %s", binDir, path.Base(bin), where)
			}
			return fmt.Errorf("no binary for %s: %s (give -file %s=PATH, or list it in files)", bin, where, bin)
		}
		if err := p.hostFile(g, bin, host, "binary", 0o755); err != nil {
			return err
		}
	}
	return p.runnable(g, bin, host, true)
}
