package services

import (
	"syscall" // SysProcAttr.Credential is syscall's type

	"github.com/baton-init/baton/config"
	"github.com/baton-init/baton/system"
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
	uid, gid, home, err := system.LookupUser(spec.User)
	if err != nil {
		return identity{}, err
	}
	if spec.Group != "" {
		if gid, err = system.LookupGroup(spec.Group); err != nil {
			return identity{}, err
		}
	}
	return identity{cred: &syscall.Credential{Uid: uid, Gid: gid, Groups: []uint32{}}, home: home, name: spec.User}, nil
}
