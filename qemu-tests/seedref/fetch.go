// Package seedref builds the first seed's own reboot method as a reference appliance, so the
// benchmarks can put baton beside it on the same kernel and under the same poller: busybox init
// and httpd, Debian's kexec-tools, `kexec -l KERNEL --initrd=… --reuse-cmdline` while the web
// server still answers, then stop it and `kexec -e`. Everything in it comes from Debian's
// packages (apt-get download, unpacked with dpkg-deb: nothing is installed on the build host).
package seedref

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
)

// Packages are what the appliance is made of. kexec-tools is dynamically linked, so the
// packages of its shared libraries come too (Fetch follows its Depends to them).
var Packages = []string{"busybox-static", "kexec-tools"}

// Fetch downloads Packages and the library packages kexec-tools depends on, and unpacks them
// into dir/root, which it returns. A root already unpacked is reused.
func Fetch(dir string) (string, error) {
	root := filepath.Join(dir, "root")
	if _, err := os.Stat(filepath.Join(root, ".packages")); err == nil {
		return root, nil
	}
	if err := run("apt-cache", append([]string{"show"}, Packages...)...); err != nil {
		// A fresh machine (or container) has no package lists yet.
		if err := run("apt-get", "update", "-q"); err != nil {
			return "", fmt.Errorf("apt-get update (to find %s): %w", strings.Join(Packages, ", "), err)
		}
	}
	libs, err := libraryPackages("kexec-tools")
	if err != nil {
		return "", err
	}
	pkgs := append(append([]string(nil), Packages...), libs...)
	debs, err := os.MkdirTemp("", "seedref-debs")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(debs)
	// apt-get download drops to the _apt user, which must be able to read the directory.
	_ = os.Chmod(debs, 0o755)
	cmd := exec.Command("apt-get", append([]string{"download", "-q"}, pkgs...)...)
	cmd.Dir = debs
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("apt-get download %s: %w\n%s", strings.Join(pkgs, " "), err, out)
	}
	partial := root + ".partial"
	os.RemoveAll(partial)
	if err := os.MkdirAll(partial, 0o755); err != nil {
		return "", err
	}
	files, _ := filepath.Glob(filepath.Join(debs, "*.deb"))
	if len(files) != len(pkgs) {
		return "", fmt.Errorf("apt-get download %s gave %d packages, want %d", strings.Join(pkgs, " "), len(files), len(pkgs))
	}
	for _, deb := range files {
		if out, err := exec.Command("dpkg-deb", "-x", deb, partial).CombinedOutput(); err != nil {
			return "", fmt.Errorf("dpkg-deb -x %s: %w\n%s", deb, err, out)
		}
	}
	if err := os.WriteFile(filepath.Join(partial, ".packages"), []byte(strings.Join(pkgs, "\n")+"\n"), 0o644); err != nil {
		return "", err
	}
	os.RemoveAll(root)
	return root, os.Rename(partial, root)
}

// libraryPackages follows pkg's Depends, transitively, through the packages named lib* —
// Debian's policy names shared library packages so — and returns those, sorted. Other
// dependencies (debconf, for kexec-tools' maintainer scripts) are not what the program needs
// to run.
func libraryPackages(pkg string) ([]string, error) {
	seen := map[string]bool{}
	queue := []string{pkg}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		var out bytes.Buffer
		cmd := exec.Command("apt-cache", "depends", "--no-recommends", "--no-suggests", "--no-conflicts",
			"--no-breaks", "--no-replaces", "--no-enhances", p)
		cmd.Stdout = &out
		if err := cmd.Run(); err != nil {
			return nil, fmt.Errorf("apt-cache depends %s: %w", p, err)
		}
		for _, line := range strings.Split(out.String(), "\n") {
			f := strings.Fields(line)
			if len(f) != 2 || strings.TrimPrefix(f[0], "|") != "Depends:" || !strings.HasPrefix(f[1], "lib") {
				continue
			}
			if name := f[1]; !seen[name] {
				seen[name] = true
				queue = append(queue, name)
			}
		}
	}
	libs := make([]string, 0, len(seen))
	for l := range seen {
		libs = append(libs, l)
	}
	slices.Sort(libs)
	return libs, nil
}

func run(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w\n%s", name, strings.Join(args, " "), err, out)
	}
	return nil
}
