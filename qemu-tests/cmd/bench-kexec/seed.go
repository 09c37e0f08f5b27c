package main

import (
	"fmt"
	"net"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/baton-init/baton/qemu-tests/seedref"
	"github.com/baton-init/baton/qemu-tests/vm"
)

// seedTrigger is the seed appliance's port that asks it to kexec (its kexec-on-request script
// waits there with nc).
const seedTrigger = 81

// buildSeed fetches the seed appliance's packages into seedDir (once) and builds its initramfs
// and boot disk in dir. Its image is compressed as baton's demo image is (zstd).
func buildSeed(seedDir, dir, vmlinuz, modules string) (initrd, disk string, err error) {
	root, err := seedref.Fetch(seedDir)
	if err != nil {
		return "", "", err
	}
	initrd = filepath.Join(dir, "seed-initrd.img")
	if err := seedref.BuildInitramfs(seedref.Spec{Root: root, Modules: modules, Compression: "zstd"}, initrd); err != nil {
		return "", "", err
	}
	disk = filepath.Join(dir, "seed-disk.img")
	if err := seedref.BuildDisk(disk, vmlinuz, initrd); err != nil {
		return "", "", err
	}
	return initrd, disk, nil
}

var seedUptime = regexp.MustCompile(`uptime=(\S+)`)

// measureSeed boots the seed's appliance (SeaBIOS direct kernel boot, as the baton kexec rows
// start) and takes one kexec the seed's way, timed by the same poller and broken down by the
// appliance's "seedref:" console lines.
func (e *env) measureSeed(t *vm.ProgramTB) run {
	g := vm.Boot(t, vm.BootOptions{Kernel: e.vmlinuz, Initrd: e.seedInitrd, Disk: e.seedDisk, Append: "quiet",
		Forward: []int{vm.WebPort, seedTrigger}, Quiet: !t.Verbose})
	g.WaitFor(`seedref: waiting for a kexec request`, 180*time.Second)
	p := g.Poll(vm.WebPort, benchPoll)
	defer p.End()
	// Steady state; and nc, started right after that line, is listening by now.
	p.WaitAnswers(t, 20, 60*time.Second)
	r := run{Steps: map[string]time.Duration{}}
	r.HostLoad = hostLoad()
	cmd := time.Now()
	if err := trigger(g.HostPort(seedTrigger)); err != nil {
		t.Fatalf("seed appliance: kexec request: %v", err)
	}
	_, asked := g.WaitForAt(`seedref: kexec requested`, 60*time.Second)
	line, loaded := g.WaitForAt(`seedref: kexec (kernel loaded|load failed)`, 60*time.Second)
	if strings.Contains(line, "failed") {
		t.Fatalf("seed appliance: kexec -l failed:\n  %s", strings.Join(g.Console()[max(0, len(g.Console())-10):], "\n  "))
	}
	_, down := g.WaitForAt(`seedref: kexec -e$`, 60*time.Second)
	initLine, initAt := g.WaitForAt(`seedref: /init started`, 120*time.Second)
	k2i, _ := uptime(initLine)
	readyLine, ready := g.WaitForAt(`seedref: httpd started`, 120*time.Second)
	gap := p.WaitGap(t, initAt, 120*time.Second)
	r.Steps[stepRequest] = asked.Sub(cmd)
	r.Steps[stepLoad] = loaded.Sub(asked)
	r.Steps[stepShutdown] = down.Sub(loaded)
	r.Steps[stepJump] = initAt.Sub(down) - k2i
	r.Steps[stepKernel] = k2i
	r.Steps[stepInit] = guestSpan(initLine, readyLine, initAt, ready)
	r.Steps[stepAnswer] = gap.To.Sub(ready)
	r.Downtime = gap.Length()
	r.FirstAnswer = gap.To.Sub(cmd)
	return r
}

// trigger connects to the appliance's request port through QEMU's forward and says so.
func trigger(hostPort int) error {
	c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", hostPort), 10*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = c.Write([]byte("kexec\n"))
	return err
}
