package client

import (
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func isCloseOnExec(t *testing.T, fd int) bool {
	t.Helper()
	flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
	if err != nil {
		t.Fatalf("fcntl(%d, F_GETFD): %v", fd, err)
	}
	return flags&unix.FD_CLOEXEC != 0
}

// The listen fds arrive without FD_CLOEXEC; Files must set it, or every child the service
// starts holds its listening sockets. Fd 3 of this process is not ours to replace, so the test
// runs itself again with a pipe at fd 3, as the service would get it.
func TestFilesAreCloseOnExec(t *testing.T) {
	if os.Getenv("CLIENT_TEST_LISTEN_CHILD") == "1" {
		os.Setenv("LISTEN_PID", strconv.Itoa(os.Getpid())) // only now is our pid known
		fs, err := Files()
		if err != nil || len(fs) != 1 || fs[0].Name() != "x" {
			t.Fatalf("Files = %v, %v; want one file named x", fs, err)
		}
		if !isCloseOnExec(t, listenFdsStart) {
			t.Fatal("fd 3 from LISTEN_FDS is not close-on-exec")
		}
		return
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	cmd := exec.Command(os.Args[0], "-test.run=^TestFilesAreCloseOnExec$", "-test.v")
	cmd.Env = append(os.Environ(), "CLIENT_TEST_LISTEN_CHILD=1", "LISTEN_FDS=1", "LISTEN_FDNAMES=x")
	cmd.ExtraFiles = []*os.File{r} // fd 3 in the child, without FD_CLOEXEC
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: TestFilesAreCloseOnExec") {
		t.Fatalf("child: %v\n%s", err, out)
	}
}

// Fds received over the control and handoff channels must be close-on-exec from the moment
// they arrive.
func TestRecvFdsAreCloseOnExec(t *testing.T) {
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(pair[0])
	defer unix.Close(pair[1])
	var p [2]int
	if err := unix.Pipe2(p[:], 0); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(p[0])
	defer unix.Close(p[1])
	if err := unix.Sendmsg(pair[0], []byte("HANDOFF"), unix.UnixRights(p[0]), nil, 0); err != nil {
		t.Fatal(err)
	}
	n, got, err := recvFds(pair[1], make([]byte, 64), make([]byte, unix.CmsgSpace(4)))
	if err != nil || n != len("HANDOFF") || len(got) != 1 {
		t.Fatalf("recvFds = %d, %v, %v", n, got, err)
	}
	defer unix.Close(got[0])
	if !isCloseOnExec(t, got[0]) {
		t.Errorf("received fd %d is not close-on-exec", got[0])
	}
}
