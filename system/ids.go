package system

import (
	"fmt"
	"os/user"
	"strconv"

	"github.com/baton-init/baton/config"
)

// Accounts checks the users and groups of a config against this system's passwd and group
// files, the ones its services will run with.
func Accounts() config.Accounts {
	return config.Accounts{
		User:  func(name string) error { _, _, _, err := LookupUser(name); return err },
		Group: func(name string) error { _, err := LookupGroup(name); return err },
	}
}

// LookupUser resolves a user given by name (through /etc/passwd) or by number, as chown(1)
// does: its uid, primary gid and home ("/" when unknown). A bare number is its own gid.
func LookupUser(name string) (uid, gid uint32, home string, err error) {
	if u, lerr := user.Lookup(name); lerr == nil {
		uid64, _ := strconv.ParseUint(u.Uid, 10, 32)
		gid64, _ := strconv.ParseUint(u.Gid, 10, 32)
		home = u.HomeDir
		if home == "" {
			home = "/"
		}
		return uint32(uid64), uint32(gid64), home, nil
	} else if n, perr := strconv.ParseUint(name, 10, 32); perr == nil {
		return uint32(n), uint32(n), "/", nil
	} else {
		return 0, 0, "", fmt.Errorf("user %q: %w (is it in the image's /etc/passwd?)", name, lerr)
	}
}

// LookupGroup resolves a group given by name (through /etc/group) or by number.
func LookupGroup(name string) (uint32, error) {
	if g, err := user.LookupGroup(name); err == nil {
		gid, _ := strconv.ParseUint(g.Gid, 10, 32)
		return uint32(gid), nil
	} else if n, perr := strconv.ParseUint(name, 10, 32); perr == nil {
		return uint32(n), nil
	} else {
		return 0, fmt.Errorf("group %q: %w (is it in the image's /etc/group?)", name, err)
	}
}
