package seedref

import (
	"os"
	"os/exec"
	"path"
	"slices"
	"strings"
	"testing"
)

// The libraries of a program are found from its ELF headers inside a root; the build host's
// own /usr/bin/env (dynamically linked on Debian) stands in for kexec-tools.
func TestNeededLibraries(t *testing.T) {
	libs, err := needed("/", "/usr/bin/env")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, l := range libs {
		names = append(names, path.Base(l))
	}
	for _, want := range []string{"ld-linux-x86-64.so.2", "libc.so.6"} {
		if !slices.Contains(names, want) {
			t.Errorf("needed(/usr/bin/env) = %v, want %s among them", libs, want)
		}
	}
}

func TestNeededNamesTheMissingLibrary(t *testing.T) {
	root := t.TempDir()
	if err := os.MkdirAll(root+"/usr/bin", 0o755); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile("/usr/bin/env")
	if err != nil {
		t.Skip(err)
	}
	os.WriteFile(root+"/usr/bin/env", data, 0o755)
	// No libc and no loader in this root: the interpreter is the first thing missing.
	_, err = needed(root, "/usr/bin/env")
	if err == nil || !strings.Contains(err.Error(), "ELF interpreter") {
		t.Fatalf("needed in an empty root: %v, want an error naming the ELF interpreter", err)
	}
}

// The scripts busybox's sh runs at boot must at least parse.
func TestScriptsParse(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh")
	}
	for _, s := range []string{"rootfs/etc/init.d/rcS", "rootfs/etc/init.d/kexec-on-request"} {
		if out, err := exec.Command(sh, "-n", s).CombinedOutput(); err != nil {
			t.Errorf("%s: %v\n%s", s, err, out)
		}
	}
}
