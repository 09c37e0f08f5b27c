package services

import (
	"fmt"
	"os/user"
	"strconv"
	"syscall" // SysProcAttr.Credential is syscall's type

	"github.com/baton-init/baton/config"
)

// identity is who a service runs as.
type identity struct {
	cred *syscall.Credential // nil: as baton itself
	home string
	name string
}

// lookupIdentity resolves user and group (names through /etc/passwd and /etc/group, or
// numbers). Supplementary groups are cleared: a service gets only what its config says.
func lookupIdentity(spec config.Service) (identity, error) {
	if spec.User == "" {
		return identity{home: "/", name: "root"}, nil
	}
	var uid, gid uint64
	home, name := "/", spec.User
	if u, err := user.Lookup(spec.User); err == nil {
		uid, _ = strconv.ParseUint(u.Uid, 10, 32)
		gid, _ = strconv.ParseUint(u.Gid, 10, 32)
		if u.HomeDir != "" {
			home = u.HomeDir
		}
	} else if n, perr := strconv.ParseUint(spec.User, 10, 32); perr == nil {
		uid, gid = n, n
	} else {
		return identity{}, fmt.Errorf("user %q: %w (is it in the image's /etc/passwd?)", spec.User, err)
	}
	if spec.Group != "" {
		if g, err := user.LookupGroup(spec.Group); err == nil {
			gid, _ = strconv.ParseUint(g.Gid, 10, 32)
		} else if n, perr := strconv.ParseUint(spec.Group, 10, 32); perr == nil {
			gid = n
		} else {
			return identity{}, fmt.Errorf("group %q: %w (is it in the image's /etc/group?)", spec.Group, err)
		}
	}
	return identity{cred: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}, home: home, name: name}, nil
}
