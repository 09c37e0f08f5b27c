package system

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"

	"golang.org/x/sys/unix"
	"reflect"
	"testing"
)

func TestParseCmdline(t *testing.T) {
	c := ParseCmdline(`BOOT_IMAGE=/vmlinuz console=ttyS0 quiet baton.config=/etc/x.toml  note="two words" baton.config=/etc/y.toml` + "\n")
	if got, want := c.Params(), []string{"BOOT_IMAGE=/vmlinuz", "console=ttyS0", "quiet", "baton.config=/etc/x.toml", "note=two words", "baton.config=/etc/y.toml"}; !reflect.DeepEqual(got, want) {
		t.Errorf("Params = %q, want %q", got, want)
	}
	for _, tc := range []struct {
		key, val string
		ok       bool
	}{
		{"baton.config", "/etc/y.toml", true}, // the last one wins, as in the kernel
		{"quiet", "", true},
		{"note", "two words", true},
		{"absent", "", false},
	} {
		if v, ok := c.Get(tc.key); v != tc.val || ok != tc.ok {
			t.Errorf("Get(%q) = %q, %v; want %q, %v", tc.key, v, ok, tc.val, tc.ok)
		}
	}
}

func TestParseProcStat(t *testing.T) {
	st, err := parseProcStat(42, "42 (we (ird) name) Z 1 42 42 0 -1 4194560 0 0")
	if err != nil {
		t.Fatal(err)
	}
	if st.Comm != "we (ird) name" || st.State != 'Z' || st.PPid != 1 || st.Kernel {
		t.Errorf("parsed %+v", st)
	}
	st, _ = parseProcStat(2, "2 (kthreadd) S 0 0 0 0 -1 2129984 0 0")
	if !st.Kernel {
		t.Errorf("kthreadd not seen as a kernel thread: %+v", st)
	}
	if _, err := parseProcStat(3, "garbage"); err == nil {
		t.Error("malformed stat accepted")
	}
	self, err := ReadProcStat(os.Getpid())
	if err != nil || self.PPid != os.Getppid() {
		t.Errorf("ReadProcStat(self) = %+v, %v", self, err)
	}
}

func TestUnescapeMount(t *testing.T) {
	for in, want := range map[string]string{`/mnt/a\040b`: "/mnt/a b", `/plain`: "/plain", `/tab\011x`: "/tab\tx", `/end\04`: `/end\04`} {
		if got := unescapeMount(in); got != want {
			t.Errorf("unescapeMount(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestParseMountOptions(t *testing.T) {
	flags, data, nofail := ParseMountOptions("ro,noexec,codepage=437,nofail,iocharset=utf8")
	if flags != unix.MS_RDONLY|unix.MS_NOEXEC || data != "codepage=437,iocharset=utf8" || !nofail {
		t.Errorf("got %#x %q %v", flags, data, nofail)
	}
}

func TestLabelFromSuperblock(t *testing.T) {
	fat := make([]byte, 2048)
	fat[66] = 0x29
	copy(fat[71:], "BOOT       ")
	copy(fat[82:], "FAT32   ")
	ext := make([]byte, 2048)
	ext[1024+56], ext[1024+57] = 0x53, 0xEF
	copy(ext[1024+120:], "data\x00")
	for name, tc := range map[string]struct {
		buf  []byte
		want string
	}{"fat32": {fat, "BOOT"}, "ext4": {ext, "data"}, "blank": {make([]byte, 2048), ""}} {
		if got := labelFromSuperblock(tc.buf); got != tc.want {
			t.Errorf("%s: label %q, want %q", name, got, tc.want)
		}
	}
}

func TestLookupUserAndGroup(t *testing.T) {
	if uid, gid, home, err := LookupUser("root"); err != nil || uid != 0 || gid != 0 || home == "" {
		t.Errorf("LookupUser(root) = %d %d %q %v", uid, gid, home, err)
	}
	if uid, gid, home, err := LookupUser("4242"); err != nil || uid != 4242 || gid != 4242 || home != "/" {
		t.Errorf("LookupUser(4242) = %d %d %q %v", uid, gid, home, err)
	}
	if _, _, _, err := LookupUser("no-such-user"); err == nil || !strings.Contains(err.Error(), `user "no-such-user"`) {
		t.Errorf("LookupUser(no-such-user) error = %v", err)
	}
	if gid, err := LookupGroup("4343"); err != nil || gid != 4343 {
		t.Errorf("LookupGroup(4343) = %d %v", gid, err)
	}
	if _, err := LookupGroup("no-such-group"); err == nil || !strings.Contains(err.Error(), `group "no-such-group"`) {
		t.Errorf("LookupGroup(no-such-group) error = %v", err)
	}
}

// hasChildren sees nothing in a process without a child, then a running child, then a zombie.
// It runs in this test's binary started again (other tests here leave reapers behind, which
// would take the zombie).
func TestHasChildren(t *testing.T) {
	if os.Getenv("BATON_TEST_HAS_CHILDREN") != "" {
		os.Exit(hasChildrenHelper())
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestHasChildren$")
	cmd.Env = append(os.Environ(), "BATON_TEST_HAS_CHILDREN=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
}

func hasChildrenHelper() int {
	fail := func(why string) int { fmt.Fprintln(os.Stderr, why); return 1 }
	if hasChildren() {
		return fail("a child seen before any was started")
	}
	running := exec.Command("sleep", "10")
	if err := running.Start(); err != nil {
		return fail(err.Error())
	}
	seen := hasChildren()
	running.Process.Kill()
	running.Wait()
	if !seen {
		return fail("a running child not seen")
	}
	if hasChildren() {
		return fail("a reaped child still seen")
	}
	zombie := exec.Command("true")
	if err := zombie.Start(); err != nil {
		return fail(err.Error())
	}
	defer zombie.Wait()
	for i := 0; ; i++ { // until it has exited and waits to be reaped
		if st, err := ReadProcStat(zombie.Process.Pid); err == nil && st.State == 'Z' {
			break
		}
		if i == 500 {
			return fail("the child did not become a zombie")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !hasChildren() {
		return fail("a zombie child not seen")
	}
	return 0
}
