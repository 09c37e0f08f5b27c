package execshim

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// EnvExecCaps carries a service's capabilities (comma-separated numbers, possibly none) to
// the shim: AmbientCapabilities= and CapabilityBoundingSet= with the same list.
const EnvExecCaps = "BATON_EXEC_CAPS"

// parseCaps reads EnvExecCaps' value.
func parseCaps(v string) (uint64, error) {
	var set uint64
	for _, f := range strings.Split(v, ",") {
		if f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n < 0 || n > 63 {
			return 0, fmt.Errorf("%s=%q: %q is not a capability number", EnvExecCaps, v, f)
		}
		set |= 1 << n
	}
	return set, nil
}

// lastCap is the highest capability this kernel knows.
func lastCap() int {
	b, err := os.ReadFile("/proc/sys/kernel/cap_last_cap")
	if err != nil {
		return unix.CAP_LAST_CAP
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return unix.CAP_LAST_CAP
	}
	return n
}

// dropBounding removes from the bounding set every capability not in keep. It needs
// CAP_SETPCAP, so it runs before the user switch; a capability dropped here can never come
// back, not even through a setuid-root binary.
func dropBounding(keep uint64) error {
	for c := 0; c <= lastCap(); c++ {
		if keep&(1<<c) != 0 {
			continue
		}
		if err := unix.Prctl(unix.PR_CAPBSET_DROP, uintptr(c), 0, 0, 0); err != nil {
			return fmt.Errorf("prctl(PR_CAPBSET_DROP, %d): %w", c, err)
		}
	}
	return nil
}

// keepCapsAcrossSetuid makes the coming setresuid from root keep the permitted set
// (SECBIT_KEEP_CAPS): without it the switch to the service's user clears it, and an ambient
// capability must be permitted to be raised.
func keepCapsAcrossSetuid() error {
	if err := unix.Prctl(unix.PR_SET_KEEPCAPS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("prctl(PR_SET_KEEPCAPS, 1): %w", err)
	}
	return nil
}

// raiseAmbient makes caps the thread's permitted, effective and inheritable sets and raises
// each in the ambient set, which is what survives execve of a program without file
// capabilities for a non-root user. A setuid clears the ambient set, so this runs after it.
func raiseAmbient(caps uint64) error {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return fmt.Errorf("capget: %w", err)
	}
	have := uint64(data[0].Permitted) | uint64(data[1].Permitted)<<32
	if missing := caps &^ have; missing != 0 {
		return fmt.Errorf("capabilities %s are not permitted to baton itself (its bounding set lacks them: a container?)", capList(missing))
	}
	for i := range data {
		word := uint32(caps >> (32 * i))
		data[i] = unix.CapUserData{Effective: word, Permitted: word, Inheritable: word}
	}
	if err := unix.Capset(&hdr, &data[0]); err != nil {
		return fmt.Errorf("capset(%s): %w", capList(caps), err)
	}
	if err := unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0); err != nil {
		return fmt.Errorf("prctl(PR_CAP_AMBIENT_CLEAR_ALL): %w", err)
	}
	for c := 0; c < 64; c++ {
		if caps&(1<<c) == 0 {
			continue
		}
		if err := unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_RAISE, uintptr(c), 0, 0); err != nil {
			return fmt.Errorf("prctl(PR_CAP_AMBIENT_RAISE, %d): %w", c, err)
		}
	}
	return nil
}

func capList(set uint64) string {
	var out []string
	for c := 0; c < 64; c++ {
		if set&(1<<c) != 0 {
			out = append(out, strconv.Itoa(c))
		}
	}
	return strings.Join(out, ",")
}
