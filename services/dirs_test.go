package services

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/baton-init/baton/config"
)

func TestDirsMadeAndOwnedAsRoot(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root to give the directories to another user")
	}
	name := fmt.Sprintf("baton-dirs-test-%d", os.Getpid())
	spec := config.Service{Name: "d", User: "nobody", StateDir: name, RuntimeDir: name + "/sub", LogsDir: name}
	want := []string{filepath.Join("/var/lib", name), filepath.Join("/run", name, "sub"), filepath.Join("/var/log", name)}
	t.Cleanup(func() {
		for _, base := range []string{"/var/lib", "/run", "/var/log"} {
			os.RemoveAll(filepath.Join(base, name))
		}
	})
	for round := 0; round < 2; round++ { // a restart finds them made
		if _, err := lookupIdentityAndDirs(spec); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range want {
		st, err := os.Stat(d)
		if err != nil {
			t.Fatal(err)
		}
		if uid := st.Sys().(*syscall.Stat_t).Uid; !st.IsDir() || uid != 65534 {
			t.Errorf("%s: dir %v, owner %d; want a directory owned by nobody (65534)", d, st.IsDir(), uid)
		}
	}
}
