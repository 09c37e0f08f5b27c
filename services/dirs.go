package services

import (
	"fmt"
	"os"

	"github.com/baton-init/baton/config"
)

// lookupIdentityAndDirs resolves who the service runs as and makes its state_dir, runtime_dir
// and logs_dir (under /var/lib, /run, /var/log), owned by that user, as systemd does for
// StateDirectory= and its kin: a daemon running as its own user cannot make them itself.
func lookupIdentityAndDirs(spec config.Service) (identity, error) {
	id, err := lookupIdentity(spec)
	if err != nil {
		return id, err
	}
	for _, d := range spec.Dirs() {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return id, fmt.Errorf("make %s: %w", d, err)
		}
		if id.cred != nil {
			if err := os.Chown(d, int(id.cred.Uid), int(id.cred.Gid)); err != nil {
				return id, fmt.Errorf("chown %s to %s: %w", d, id.name, err)
			}
		}
	}
	return id, nil
}
