package services

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/baton-init/baton/config"
)

// What the shim applies between fork and exec, read back from /proc by the service itself.
func TestExecSettingsReachTheService(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root (switches to nobody, raises a hard limit)")
	}
	dir := t.TempDir()
	envFile := filepath.Join(dir, "env")
	os.WriteFile(envFile, []byte("# comment\nFROM_FILE=\"quoted value\"\nGREETING=from the file\n"), 0o644)
	// Below the current hard limits: raising one needs CAP_SYS_RESOURCE, which a container
	// may not give even to root.
	var nofile, nproc unix.Rlimit
	unix.Getrlimit(unix.RLIMIT_NOFILE, &nofile)
	unix.Getrlimit(unix.RLIMIT_NPROC, &nproc)
	hardNofile, hardNproc := strconv.FormatUint(nofile.Max/2, 10), strconv.FormatUint(min(nproc.Max, 1<<20)/2, 10)
	sv := supervisor(t, config.Service{Name: "x", User: "nobody", SupplementaryGroups: []string{"4", "20"},
		UMask: "0027", LimitNOFILE: "100:" + hardNofile, LimitCORE: "0", LimitNPROC: "77:" + hardNproc, NoNewPrivileges: true,
		Env: []string{"GREETING=from env"}, EnvironmentFile: []string{envFile, "-" + filepath.Join(dir, "missing")},
		Exec: sh(`grep -E '^(Umask|Groups|NoNewPrivs|Uid):' /proc/self/status; grep -E '^Max (open files|core file size|processes)' /proc/self/limits; echo "env: $GREETING / $FROM_FILE"; exec sleep 100`)})
	if rep := sv.StartAll(); rep[0].Err != nil {
		t.Fatal(rep[0].Err)
	}
	s := sv.Service("x")
	waitLog(t, s, "env:")
	var out strings.Builder
	for _, l := range s.Logs.Tail(0) {
		out.WriteString(l.Text + "\n")
	}
	for _, want := range []string{
		`Umask:\s+0027`, `Uid:\s+65534\s+65534`, `Groups:\s+4 20\s*\n`, `NoNewPrivs:\s+1`,
		`Max open files\s+100\s+` + hardNofile, `Max core file size\s+0\s+0`, `Max processes\s+77\s+` + hardNproc,
		`env: from the file / quoted value`,
	} {
		if !regexp.MustCompile(want).MatchString(out.String()) {
			t.Errorf("no %q in:\n%s", want, out.String())
		}
	}
}

func TestEnvironmentFileErrors(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad")
	os.WriteFile(bad, []byte("JUST A LINE\n"), 0o644)
	for _, tc := range []struct{ file, want string }{
		{filepath.Join(dir, "missing"), "no such file"},
		{bad, "bad:1: not KEY=value"},
	} {
		sv := supervisor(t, config.Service{Name: "x", EnvironmentFile: []string{tc.file}, Exec: sh("exec sleep 100")})
		rep := sv.StartAll()
		if rep[0].Err == nil || !strings.Contains(rep[0].Err.Error(), tc.want) {
			t.Errorf("%s: %v; want %q", tc.file, rep[0].Err, tc.want)
		}
		sv.Service("x").WaitUntil(func(st Status) bool { return st.State == Failed }, 2*time.Second)
	}
}
