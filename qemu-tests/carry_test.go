package qemutests

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/baton-init/baton/qemu-tests/carryload"
)

const stream2Port = 9001 // carry.toml's stream2: the same line counter, not keeping connections

// TestQEMUKeepConnections boots the test appliance with carry.toml (web and stream keep their
// connections; stream2 does not) and, under load — 16 long-lived stream connections, 4 on
// stream2, and a request loop on web, every client with a 30 s timeout — kexecs into the same
// kernel, then from it into Debian's cloud kernel (the image packs nf_tables and its
// dependencies for both; the cloud kernel has crc32c built in): each stream connection keeps
// its count through both, no web request fails, and stream2's connections are lost at the
// first as they were before keep_connections. The longest stall a client saw is logged.
func TestQEMUKeepConnections(t *testing.T) {
	t.Parallel()
	vmlinuz, modules := kernel(t, "amd64")
	initrd, disk := testImage(t, modules)
	// Our own copies at once: another test process may rebuild out/qemu-tests meanwhile, and
	// initctl kexec boots the slot on the disk whose image is the running one.
	initrd, disk = copyToTemp(t, initrd), copyToTemp(t, disk)
	vm := Boot(t, BootOptions{Kernel: vmlinuz, Initrd: initrd, Disk: disk, Append: "baton.config=/etc/baton/carry.toml",
		Forward: []int{webPort, testPort, controlPort, streamPort, stream2Port}})
	vm.WaitFor(`baton: all services started`, bootTimeout)

	host := func(port int) string {
		return strings.TrimSuffix(strings.TrimPrefix(vm.URL(port, "/"), "http://"), "/")
	}
	web := carryload.StartRequests(vm.URL(webPort, "/"), 4)
	kept, err := carryload.StartLines(host(streamPort), 16)
	if err != nil {
		t.Fatal(err)
	}
	lost, err := carryload.StartLines(host(stream2Port), 4)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range []*carryload.Lines{kept, lost} {
		if err := l.WaitLines(3, 60*time.Second); err != nil {
			t.Fatal(err)
		}
	}

	out, code := vm.Initctl(t, "kexec")
	if code != 0 {
		t.Fatalf("kexec: %d\n%s", code, out)
	}
	_, jump := vm.WaitForAt(`kexec_core: Starting new kernel`, 90*time.Second)
	vm.WaitFor(`carried connections restored`, bootTimeout)
	_, up := vm.WaitForAt(`baton: all services started`, bootTimeout)
	// Every kept connection talks again: three more lines each, in all. If they do not, the
	// second kexec has nothing to carry: say why (the clients' errors) and end here.
	if err := kept.WaitLines(kept.Answered()+3*16, 90*time.Second); err != nil {
		t.Fatalf("after the kexec into the same kernel: %v\nstream: %s\nweb: %s", err, kept.Stop(), web.Stop())
	}
	lostRes := lost.Stop()
	t.Logf("kexec (same kernel) at %s; longest stall so far: line %v, request %v", jump.Format("15:04:05.000"),
		kept.MaxStall().Round(time.Millisecond), web.Longest().Round(time.Millisecond))

	// A request whose SYN the first kexec dropped is retried on the client's backoff (up to
	// 21 s apart): if the second kexec dropped it again, the client would see both outages
	// as one, longer than its timeout. Every client sent before the machine was back is
	// answered first.
	for _, c := range []interface {
		WaitSettled(time.Time, time.Duration) error
	}{web, kept} {
		if err := c.WaitSettled(up, carryload.Timeout+10*time.Second); err != nil {
			t.Error(err)
		}
	}

	// generic → cloud: the carried connections are carried again, by the other kernel's modules.
	out, code = vm.Initctl(t, "kexec", "--kernel", "/boot/vmlinuz-cloud")
	if code != 0 {
		t.Fatalf("kexec into the cloud kernel: %d\n%s", code, out)
	}
	_, jump = vm.WaitForAt(`Linux version .*cloud-amd64`, 3*time.Minute)
	vm.WaitFor(`carried connections restored`, bootTimeout)
	vm.WaitFor(`baton: all services started`, bootTimeout)
	if err := kept.WaitLines(kept.Answered()+3*16, 90*time.Second); err != nil {
		t.Error(err)
	}
	var info struct{ Release string }
	mustJSON(t, vm.Get(t, testPort, "/info"), &info)
	if !strings.HasSuffix(info.Release, "-cloud-amd64") {
		t.Errorf("uname -r %q after the kexec into the cloud kernel", info.Release)
	}
	webRes, keptRes := web.Stop(), kept.Stop()
	t.Logf("kexec into the cloud kernel at %s; web over both: %s", jump.Format("15:04:05.000"), webRes)
	t.Logf("stream (keep_connections) over both: %s", keptRes)
	t.Logf("stream2 (not kept): %s", lostRes)
	if webRes.Failed != 0 || webRes.Answered == 0 {
		t.Errorf("web requests across the kexec: %s; want none failed", webRes)
	}
	if keptRes.Broken != 0 {
		t.Errorf("stream: %d of 16 kept connections broke: %v", keptRes.Broken, keptRes.Errs)
	}
	if lostRes.Broken != 4 {
		t.Errorf("stream2: %d of 4 connections broke; a service that does not keep its connections loses them", lostRes.Broken)
	}
	if out, _ := vm.Initctl(t, "analyze"); !strings.Contains(out, "dump carried connections") || !strings.Contains(out, "restore carried connections") {
		t.Errorf("analyze does not show the carrying steps:\n%s", out)
	}
}

func copyToTemp(t *testing.T, path string) string {
	t.Helper()
	in, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	dst := filepath.Join(t.TempDir(), filepath.Base(path))
	out, err := os.Create(dst)
	if err == nil {
		_, err = io.Copy(out, in)
		err = errors.Join(err, out.Close())
	}
	if err != nil {
		t.Fatal(err)
	}
	return dst
}
