package images

import (
	"bufio"
	"bytes"
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"path"
	"sort"
	"strings"

	"github.com/u-root/u-root/pkg/ldd"
)

// What the kernel needs to run a file, found from its first bytes.
const (
	kindOther   = iota // data, or a format the kernel's binfmt decides about
	kindStatic         // ELF without an interpreter
	kindDynamic        // ELF with PT_INTERP, or a shared library
	kindScript         // #!
)

func inspect(host string) (kind int, err error) {
	f, err := os.Open(host)
	if err != nil {
		return kindOther, err
	}
	defer f.Close()
	head := make([]byte, 4)
	n, _ := f.Read(head)
	switch {
	case n >= 2 && string(head[:2]) == "#!":
		return kindScript, nil
	case n == 4 && string(head) == elf.ELFMAG:
	default:
		return kindOther, nil
	}
	e, err := elf.NewFile(f)
	if err != nil {
		return kindOther, fmt.Errorf("%s: broken ELF file: %w", host, err)
	}
	for _, p := range e.Progs {
		if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
			return kindDynamic, nil
		}
	}
	return kindStatic, nil
}

// libraries returns what the build host's dynamic loader loads for the ELF file host: its
// interpreter, every shared library it needs (transitively, as the loader resolves them),
// and whatever each of those is a symbolic link to; sorted, each once. A library the loader
// cannot find is an error naming the file and the library (u-root's ldd would list the word
// "not" as a path).
func libraries(host string) (interp string, paths []string, err error) {
	interp, err = ldd.GetInterp(host)
	if err != nil {
		return "", nil, fmt.Errorf("%s: its ELF interpreter: %w", host, err)
	}
	if interp == "" {
		return "", nil, nil
	}
	if _, err := os.Stat(interp); err != nil {
		return "", nil, fmt.Errorf("%s needs the ELF interpreter %s, which this machine lacks: %w", host, interp, err)
	}
	if missing, err := notFound(interp, host); err != nil {
		return "", nil, err
	} else if len(missing) > 0 {
		return "", nil, fmt.Errorf("%s needs %s, which this machine's loader cannot find (install the package that has it, or put its directory in /etc/ld.so.conf.d and run ldconfig)",
			host, strings.Join(missing, ", "))
	}
	paths, err = ldd.FList(host)
	if err != nil {
		return "", nil, fmt.Errorf("libraries of %s: %w", host, err)
	}
	sort.Strings(paths)
	return interp, paths, nil
}

// notFound asks the loader, in its tracing mode (what ldd does), which libraries of host it
// cannot find. Unlike --list, tracing goes on after the first missing one.
func notFound(interp, host string) ([]string, error) {
	cmd := exec.Command(interp, host)
	cmd.Env = append(os.Environ(), "LD_TRACE_LOADED_OBJECTS=1")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	var missing []string
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) == 4 && f[1] == "=>" && f[2] == "not" && f[3] == "found" {
			missing = append(missing, f[0])
		}
	}
	if len(missing) == 0 && err != nil {
		return nil, fmt.Errorf("%s: its loader %s cannot list its libraries: %v %s", host, interp, err, strings.TrimSpace(stderr.String()))
	}
	return missing, nil
}

// shebang returns the interpreter a script (guest in the image, host on this machine)
// names on its #! line.
func shebang(guest, host string) (string, error) {
	f, err := os.Open(host)
	if err != nil {
		return "", err
	}
	defer f.Close()
	// The kernel reads at most 256 bytes of the #! line (BINPRM_BUF_SIZE).
	line, _ := bufio.NewReaderSize(f, 256).ReadString('\n')
	fields := strings.Fields(strings.TrimPrefix(line, "#!"))
	if len(fields) == 0 {
		return "", fmt.Errorf("%s: a #! line without an interpreter", guest)
	}
	interp := fields[0]
	switch {
	case !path.IsAbs(interp):
		return "", fmt.Errorf("%s: interpreter %q is not an absolute path; the kernel would refuse it", guest, interp)
	case path.Base(interp) == "env":
		return "", fmt.Errorf("%s starts with %q, which finds its interpreter in PATH when it runs, so the image builder cannot know what to pack: write its absolute path (#!/usr/bin/python3) or put it first in exec (exec = [\"/usr/bin/python3\", %q])",
			guest, strings.TrimSpace(line), guest)
	}
	return interp, nil
}
