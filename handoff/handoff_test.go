package handoff

import (
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/baton-init/baton/config"
)

func TestParseNotify(t *testing.T) {
	got := ParseNotify([]byte("READY=1\nSTATUS=serving 3 clients\nnoequals\nFDNAME=a=b\n\nREADY=0\n"))
	want := map[string]string{"READY": "0", "STATUS": "serving 3 clients", "FDNAME": "a=b"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("ParseNotify = %v, want %v", got, want)
	}
}

func pipe(t *testing.T) (r, w int) {
	t.Helper()
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	return p[0], p[1]
}

func TestFDStoreLimitAndHangup(t *testing.T) {
	s, err := NewFDStore(2, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	r1, w1 := pipe(t)
	r2, w2 := pipe(t)
	r3, w3 := pipe(t)
	defer unix.Close(w2)
	if err := s.Add("a", []int{r1}, true); err != nil {
		t.Fatal(err)
	}
	if err := s.Add("b", []int{r2, r3}, false); err == nil || !strings.Contains(err.Error(), `fd store full (fdstore_max = 2): 1 fd(s) named "b" refused`) {
		t.Errorf("over the limit: %v", err)
	}
	// The refused fd was closed by the store: its pipe's write end sees no reader.
	if _, err := unix.Write(w3, []byte("x")); err != unix.EPIPE {
		t.Errorf("write to the refused fd's pipe: %v, want EPIPE (fd closed)", err)
	}
	unix.Close(w3)
	if got := s.List(); len(got) != 2 || got[0].Kind != "pipe" || got[1].Poll {
		t.Errorf("List = %+v", got)
	}
	// Closing the write end hangs up r1, which is polled: the store drops it.
	unix.Close(w1)
	deadline := time.Now().Add(5 * time.Second)
	for len(s.List()) != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("hung-up fd still stored: %+v", s.List())
		}
		time.Sleep(10 * time.Millisecond) // the watcher acts on its own goroutine
	}
	if n := s.Remove("b"); n != 1 || len(s.Files()) != 0 {
		t.Errorf("Remove(b) = %d, left %+v", n, s.Files())
	}
}

func TestFDStoreDisabled(t *testing.T) {
	s, _ := NewFDStore(0, slog.New(slog.NewTextHandler(io.Discard, nil)))
	r, w := pipe(t)
	defer unix.Close(w)
	if err := s.Add("x", []int{r}, true); err != ErrStoreDisabled {
		t.Errorf("Add to a disabled store: %v", err)
	}
}

func TestBindReplacesStaleSocketOnly(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "s.sock")
	h, err := Bind(config.Socket{Name: "s", Listen: "unix://" + path, Mode: "0600", Backlog: 16})
	if err != nil {
		t.Fatal(err)
	}
	h.Close() // leaves the socket file behind, as a crashed init would
	h, err = Bind(config.Socket{Name: "s", Listen: "unix://" + path, Mode: "0600", Backlog: 16})
	if err != nil {
		t.Fatalf("rebind over a stale socket file: %v", err)
	}
	defer h.Close()
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o600 {
		t.Errorf("mode %v", st.Mode().Perm())
	}
	regular := filepath.Join(dir, "data")
	os.WriteFile(regular, []byte("keep me"), 0o644)
	if _, err := Bind(config.Socket{Name: "d", Listen: "unix://" + regular, Mode: "0600"}); err == nil || !strings.Contains(err.Error(), "exists and is not a socket") {
		t.Errorf("bind over a regular file: %v", err)
	}
	if b, _ := os.ReadFile(regular); string(b) != "keep me" {
		t.Errorf("regular file touched")
	}
}

func TestBindKinds(t *testing.T) {
	dir := t.TempDir()
	v6only := true
	for _, tc := range []struct {
		spec   config.Socket
		sotype int
	}{
		{config.Socket{Listen: "tcp://127.0.0.1:0", ReusePort: true}, unix.SOCK_STREAM},
		{config.Socket{Listen: "tcp6://[::1]:0", V6Only: &v6only}, unix.SOCK_STREAM},
		{config.Socket{Listen: "udp://127.0.0.1:0"}, unix.SOCK_DGRAM},
		{config.Socket{Listen: "unixgram://" + dir + "/g.sock", Mode: "0666"}, unix.SOCK_DGRAM},
		{config.Socket{Listen: "unixpacket://" + dir + "/p.sock", Mode: "0666"}, unix.SOCK_SEQPACKET},
	} {
		tc.spec.Name, tc.spec.Backlog = "x", 8
		h, err := Bind(tc.spec)
		if err != nil {
			if strings.HasPrefix(tc.spec.Listen, "tcp6") {
				t.Logf("%s: %v (no IPv6 here?)", tc.spec.Listen, err)
				continue
			}
			t.Errorf("%s: %v", tc.spec.Listen, err)
			continue
		}
		if got, _ := unix.GetsockoptInt(h.Fd, unix.SOL_SOCKET, unix.SO_TYPE); got != tc.sotype {
			t.Errorf("%s: type %d, want %d", tc.spec.Listen, got, tc.sotype)
		}
		h.Close()
	}
}

// TestBindAddressNotYetConfigured: the boot binds held sockets before the network is up, so
// an address no interface has yet must bind (IP_FREEBIND), and 0.0.0.0 must not need it.
func TestBindAddressNotYetConfigured(t *testing.T) {
	for _, tc := range []struct {
		listen   string
		freebind bool
	}{
		{"tcp://192.0.2.1:0", true}, // TEST-NET-1: on no interface here
		{"udp://192.0.2.1:0", true},
		{"tcp://0.0.0.0:0", false},
		{"tcp://127.0.0.1:0", true},
	} {
		h, err := Bind(config.Socket{Name: "x", Listen: tc.listen, Backlog: 8})
		if err != nil {
			t.Errorf("%s: %v", tc.listen, err)
			continue
		}
		level, opt := unix.IPPROTO_IPV6, unix.IPV6_FREEBIND
		if sa, _ := unix.Getsockname(h.Fd); sa != nil {
			if _, v4 := sa.(*unix.SockaddrInet4); v4 {
				level, opt = unix.IPPROTO_IP, unix.IP_FREEBIND
			}
		}
		if got, _ := unix.GetsockoptInt(h.Fd, level, opt); (got == 1) != tc.freebind {
			t.Errorf("%s: freebind %d, want %v", tc.listen, got, tc.freebind)
		}
		h.Close()
	}
}

// waitStored waits until s holds n fds; the watcher drops hung-up ones on its own goroutine.
func waitStored(t *testing.T, s *FDStore, n int) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); len(s.List()) != n; {
		if time.Now().After(deadline) {
			t.Fatalf("store holds %+v, want %d fd(s)", s.List(), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A service is started with Files() after the store's lock is released; meanwhile the watcher
// may close a stored fd that hung up and open(2) reuse its number. What Files() returned must
// still be the stored file.
func TestFDStoreFilesSurviveTheWatcherClosingThem(t *testing.T) {
	s, err := NewFDStore(1, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	r, w := pipe(t)
	if err := s.Add("p", []int{r}, true); err != nil {
		t.Fatal(err)
	}
	files := s.Files()
	for _, f := range files {
		defer unix.Close(f.Fd) // the caller owns them
	}
	if len(files) != 1 || files[0].Name != "p" {
		t.Fatalf("Files = %+v", files)
	}
	unix.Close(w) // r hangs up: the watcher drops it, then closes it in its next round
	waitStored(t, s, 0)
	for deadline := time.Now().Add(5 * time.Second); ; {
		if _, err := unix.FcntlInt(uintptr(r), unix.F_GETFD, 0); err == unix.EBADF {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the store never closed fd %d after dropping it", r)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// open(2) takes the lowest free number: a few opens reuse the one the store closed.
	for range 4 {
		fd, err := unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(fd)
		if fd == r {
			break
		}
	}
	var st unix.Stat_t
	if err := unix.Fstat(files[0].Fd, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFIFO {
		t.Errorf("fd %d from Files() is no longer the stored pipe: mode %#o, %v", files[0].Fd, st.Mode&unix.S_IFMT, err)
	}
}

func TestFDStoreWatcherSurvivesAPanic(t *testing.T) {
	s, err := NewFDStore(2, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	panicked := make(chan struct{})
	hook := func(in *FDStore) {
		if in != s { // another test's store, still winding down
			return
		}
		select {
		case <-panicked:
		default:
			close(panicked)
			panic("injected: watcher round")
		}
	}
	watchHook.Store(&hook)
	defer watchHook.Store(nil)
	r, w := pipe(t)
	if err := s.Add("p", []int{r}, true); err != nil { // wakes the watcher: its round panics
		t.Fatal(err)
	}
	select {
	case <-panicked:
	case <-time.After(5 * time.Second):
		t.Fatal("the watcher never ran a round after Add")
	}
	unix.Close(w)
	waitStored(t, s, 0) // a later hangup is still noticed
}
