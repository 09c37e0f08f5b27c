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
	var groups []uint32
	for _, g := range spec.SupplementaryGroups {
		gid, err := system.LookupGroup(g)
		if err != nil {
			return identity{}, err
		}
		groups = append(groups, gid)
	}
	if spec.User == "" {
		if len(groups) > 0 { // root, with these groups only
			return identity{cred: &syscall.Credential{Groups: groups}, home: "/", name: "root"}, nil
		}
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
	if groups == nil {
		groups = []uint32{} // cleared: only what the config says
	}
	return identity{cred: &syscall.Credential{Uid: uid, Gid: gid, Groups: groups}, home: home, name: spec.User}, nil
}
