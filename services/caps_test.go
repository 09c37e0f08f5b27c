package services

import (
	"os"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/baton-init/baton/config"
)

// capabilities reach the service as AmbientCapabilities= and CapabilityBoundingSet= would:
// read back from its own /proc/PID/status.
func TestCapabilitiesReachTheService(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root (drops from the bounding set, switches to nobody)")
	}
	const bind, raw = 1 << unix.CAP_NET_BIND_SERVICE, 1 << unix.CAP_NET_RAW
	for _, tc := range []struct {
		name, user string
		caps       []string
		amb, bnd   uint64 // wanted CapAmb and CapBnd
		eff        uint64
	}{
		{"nobody with two", "nobody", []string{"CAP_NET_BIND_SERVICE", "net_raw"}, bind | raw, bind | raw, bind | raw},
		{"root with one", "", []string{"CAP_NET_BIND_SERVICE"}, bind, bind, bind},
		{"root with none", "", []string{}, 0, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sv := supervisor(t, config.Service{Name: "x", User: tc.user, Capabilities: tc.caps,
				Exec: sh(`grep -E '^Cap(Amb|Bnd|Eff):' /proc/self/status; echo done; exec sleep 100`)})
			if rep := sv.StartAll(); rep[0].Err != nil {
				t.Fatal(rep[0].Err)
			}
			s := sv.Service("x")
			waitLog(t, s, "done")
			got := map[string]uint64{}
			for _, l := range s.Logs.Tail(0) {
				k, v, ok := strings.Cut(l.Text, ":")
				if !ok {
					continue
				}
				n, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
				if err == nil {
					got[k] = n
				}
			}
			want := map[string]uint64{"CapAmb": tc.amb, "CapBnd": tc.bnd, "CapEff": tc.eff}
			for k, w := range want {
				if n, ok := got[k]; !ok || n != w {
					t.Errorf("%s = %#x (present %v); want %#x", k, n, ok, w)
				}
			}
		})
	}
}

// A capability baton does not have itself cannot be given: the start fails and says why.
func TestCapabilityBatonLacks(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root")
	}
	var missing string
	for name, n := range map[string]int{"CAP_SYS_RESOURCE": unix.CAP_SYS_RESOURCE, "CAP_SYS_MODULE": unix.CAP_SYS_MODULE, "CAP_MAC_ADMIN": unix.CAP_MAC_ADMIN} {
		// PR_CAPBSET_READ answers 1 (in the bounding set) or 0 as its return value.
		if r, _, errno := unix.Syscall6(unix.SYS_PRCTL, unix.PR_CAPBSET_READ, uintptr(n), 0, 0, 0, 0); errno == 0 && r == 0 {
			missing = name
		}
	}
	if missing == "" {
		t.Skip("baton's bounding set is full here: no capability to miss")
	}
	sv := supervisor(t, config.Service{Name: "x", User: "nobody", Capabilities: []string{missing}, Exec: sh("exec sleep 100")})
	sv.StartAll()
	s := sv.Service("x")
	waitLog(t, s, "not permitted to baton itself")
}
