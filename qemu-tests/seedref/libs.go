package seedref

import (
	"debug/elf"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
)

// libDirs are where Debian's loader looks for a library when no ld.so.cache says otherwise
// (the appliance has none): the multiarch directories first.
var libDirs = []string{"/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/lib", "/usr/lib"}

// needed returns what the loader maps to run the ELF program at prog (a path inside root):
// its interpreter and every shared library it needs, transitively, as paths inside root,
// sorted. Everything is looked up in root only (the unpacked packages), never on the build
// host, so the image does not depend on what this machine has installed. A static program
// needs nothing.
//
// images' packer does the same for the build host's own files by asking the host's loader
// (ldd); here the files are not installed, so the ELF headers are read instead.
func needed(root, prog string) ([]string, error) {
	interp, libs, err := elfDeps(filepath.Join(root, prog))
	if err != nil || interp == "" {
		return nil, err
	}
	if _, err := os.Stat(filepath.Join(root, interp)); err != nil {
		return nil, fmt.Errorf("%s needs the ELF interpreter %s, which the unpacked packages lack: %w", prog, interp, err)
	}
	found := map[string]bool{interp: true}
	queue := append([]string(nil), libs...)
	by := map[string]string{}
	for _, l := range libs {
		by[l] = prog
	}
	for len(queue) > 0 {
		soname := queue[0]
		queue = queue[1:]
		p := findLib(root, soname)
		if p == "" {
			return nil, fmt.Errorf("%s (needed by %s) is in none of %v under %s: which package has it?", soname, by[soname], libDirs, root)
		}
		if found[p] {
			continue
		}
		found[p] = true
		_, more, err := elfDeps(inRoot(root, p))
		if err != nil {
			return nil, err
		}
		for _, m := range more {
			if _, ok := by[m]; !ok {
				by[m] = p
				queue = append(queue, m)
			}
		}
	}
	out := make([]string, 0, len(found))
	for p := range found {
		out = append(out, p)
	}
	slices.Sort(out)
	return out, nil
}

// elfDeps reads an ELF file's interpreter (PT_INTERP) and DT_NEEDED entries.
func elfDeps(file string) (interp string, libs []string, err error) {
	f, err := elf.Open(file)
	if err != nil {
		return "", nil, fmt.Errorf("%s: %w", file, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			b := make([]byte, p.Filesz)
			if _, err := p.ReadAt(b, 0); err != nil {
				return "", nil, fmt.Errorf("%s: PT_INTERP: %w", file, err)
			}
			interp = string(b[:len(b)-1]) // NUL-terminated
		}
	}
	libs, err = f.ImportedLibraries()
	if err != nil {
		return "", nil, fmt.Errorf("%s: DT_NEEDED: %w", file, err)
	}
	return interp, libs, nil
}

func findLib(root, soname string) string {
	for _, d := range libDirs {
		p := path.Join(d, soname)
		if _, err := os.Stat(inRoot(root, p)); err == nil {
			return p
		}
	}
	return ""
}

// inRoot is the host path of p inside root. os.Stat follows a link's absolute target on the
// host, not in root; resolve reads the links itself.
func inRoot(root, p string) string {
	if r, err := resolve(root, p); err == nil {
		return filepath.Join(root, r)
	}
	return filepath.Join(root, p)
}

// resolve follows p's symbolic links inside root and returns the final path (inside root).
func resolve(root, p string) (string, error) {
	for hops := 0; hops < 40; hops++ {
		st, err := os.Lstat(filepath.Join(root, p))
		if err != nil {
			return "", err
		}
		if st.Mode()&os.ModeSymlink == 0 {
			return p, nil
		}
		target, err := os.Readlink(filepath.Join(root, p))
		if err != nil {
			return "", err
		}
		if !path.IsAbs(target) {
			target = path.Join(path.Dir(p), target)
		}
		p = target
	}
	return "", fmt.Errorf("%s: too many levels of symbolic links", p)
}
