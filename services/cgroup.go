package services

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/baton-init/baton/config"
)

// Cgroups places each service in its own cgroup2 group below Root, so stopping it reaches
// every process it started (even one that left its process group) and limits apply.
type Cgroups struct {
	Root string // e.g. /sys/fs/cgroup/baton
}

// SetupCgroups creates root below a mounted cgroup2 hierarchy and enables the memory and pids
// controllers for the services. It returns nil when cgroup2 is not usable; the error says why.
func SetupCgroups(root string) (*Cgroups, error) {
	parent := filepath.Dir(root)
	if _, err := os.Stat(filepath.Join(parent, "cgroup.controllers")); err != nil {
		return nil, fmt.Errorf("cgroups: %s is not a cgroup2 mount: %w", parent, err)
	}
	// Controllers must be enabled on each level down to the services' parent.
	var errs []error
	if err := os.WriteFile(filepath.Join(parent, "cgroup.subtree_control"), []byte("+memory +pids"), 0); err != nil {
		errs = append(errs, fmt.Errorf("enable memory,pids in %s: %w", parent, err))
	}
	if err := os.Mkdir(root, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return nil, fmt.Errorf("cgroups: %w", err)
	}
	if err := os.WriteFile(filepath.Join(root, "cgroup.subtree_control"), []byte("+memory +pids"), 0); err != nil {
		errs = append(errs, fmt.Errorf("enable memory,pids in %s: %w", root, err))
	}
	return &Cgroups{Root: root}, errors.Join(errs...)
}

// prepare creates (or empties the limits of) the service's group and returns it opened, for
// CLONE_INTO_CGROUP. The caller closes the file.
func (c *Cgroups) prepare(spec config.Service) (string, *os.File, error) {
	dir := filepath.Join(c.Root, spec.Name)
	err := os.Mkdir(dir, 0o755)
	if err != nil && !errors.Is(err, os.ErrExist) {
		return "", nil, fmt.Errorf("cgroup %s: %w", dir, err)
	}
	// A group made just now has no limits; one made before may keep a limit the config no
	// longer sets, so it is reset to "max".
	limits := map[string]string{}
	if err != nil {
		limits["memory.max"], limits["pids.max"] = "max", "max"
	}
	if spec.MemoryMax != "" {
		limits["memory.max"] = spec.MemoryMax
	}
	if spec.PidsMax > 0 {
		limits["pids.max"] = strconv.Itoa(spec.PidsMax)
	}
	for file, v := range limits {
		err := os.WriteFile(filepath.Join(dir, file), []byte(v), 0)
		set := (file == "memory.max" && spec.MemoryMax != "") || (file == "pids.max" && spec.PidsMax > 0)
		if err != nil && set {
			return "", nil, fmt.Errorf("cgroup %s: set %s=%s: %w — is the controller enabled?", dir, file, v, err)
		}
	}
	f, err := os.Open(dir)
	if err != nil {
		return "", nil, fmt.Errorf("cgroup %s: %w", dir, err)
	}
	return dir, f, nil
}

// procs lists the pids in a service's group.
func cgroupProcs(dir string) []int {
	b, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	if err != nil {
		return nil
	}
	var out []int
	for _, f := range strings.Fields(string(b)) {
		if n, err := strconv.Atoi(f); err == nil {
			out = append(out, n)
		}
	}
	return out
}

// cgroupKill SIGKILLs every process in the group (cgroup.kill, Linux 5.14).
func cgroupKill(dir string) error {
	return os.WriteFile(filepath.Join(dir, "cgroup.kill"), []byte("1"), 0)
}
