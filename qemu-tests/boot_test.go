package qemutests

import (
	"encoding/json"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

const (
	// Generous for TCG on a loaded 2-core machine; a healthy boot takes ~3 s to services.
	bootTimeout = 120 * time.Second
)

// TestQEMUBootDemo boots the test appliance once and checks what only a real PID 1 shows:
// mounts, modules (listed, matched to devices, and loaded on the kernel's request), network,
// hostname, services (a oneshot web is ordered after, reload-config adding a service), the
// reaping of orphans, and a clean poweroff through a signal.
func TestQEMUBootDemo(t *testing.T) {
	t.Parallel()
	vmlinuz, modules := kernel(t, "amd64")
	initrd, disk := testImage(t, modules)
	vm := Boot(t, BootOptions{Kernel: vmlinuz, Initrd: initrd, Disk: disk, Forward: []int{webPort, testPort, controlPort}})

	started := vm.WaitFor(`baton: all services started`, bootTimeout)
	t.Logf("boot: %s", started)
	for _, want := range []string{"kernel_to_init=", "init_to_services=", "failed_steps=0"} {
		if !strings.Contains(started, want) {
			t.Errorf("boot summary %q lacks %q", started, want)
		}
	}
	console := strings.Join(vm.Console(), "\n")
	for _, step := range []string{"mount base file systems", "load config", "set hostname",
		"load kernel modules", "configure network", "start service web"} {
		if !regexp.MustCompile(`step done step="` + step + `" took=\S+`).MatchString(console) {
			t.Errorf("console has no timed line for boot step %q", step)
		}
	}

	vm.Run(t, "web answers through the port forward", func(t *testing.T) {
		body := vm.Get(t, webPort, "/")
		if !regexp.MustCompile(`^hello from baton demo web test pid \d+ on baton-test\n$`).MatchString(body) {
			t.Errorf("GET / = %q", body)
		}
	})

	vm.Run(t, "machine state", func(t *testing.T) {
		var info struct {
			Hostname, Release, Modprobe string
			Modules, Mounts, Routes     []string
			Pid1RSS                     string `json:"pid1_rss"`
			Cgroup                      map[string]string
		}
		mustJSON(t, vm.Get(t, testPort, "/info"), &info)
		t.Logf("PID 1 resident memory with the services running: %s", info.Pid1RSS)
		if info.Pid1RSS == "" {
			t.Errorf("no VmRSS for PID 1")
		}
		// testsvc runs in its own cgroup with the limits of its config.
		if c := info.Cgroup; c["path"] != "/baton/testsvc" || c["pids.max"] != "64" || c["memory.max"] != "67108864" {
			t.Errorf("testsvc cgroup = %v, want /baton/testsvc with pids.max 64 and memory.max 64M", c)
		}
		if info.Hostname != "baton-test" {
			t.Errorf("hostname = %q", info.Hostname)
		}
		if !contains(info.Routes, "eth0 0.0.0.0/0 via 10.0.2.2") || !contains(info.Routes, "eth0 10.0.2.0/24") {
			t.Errorf("routes %v, want the configured gateway as default route and the subnet on eth0", info.Routes)
		}
		if info.Modprobe != "/sbin/modprobe" {
			t.Errorf("/proc/sys/kernel/modprobe = %q", info.Modprobe)
		}
		// virtio_net is listed in the config; virtio_pci is not, and must come from
		// matching the PCI device's modalias.
		for _, m := range []string{"virtio_net", "virtio_pci", "net_failover"} {
			if !contains(info.Modules, m) {
				t.Errorf("module %s not loaded; loaded: %v", m, info.Modules)
			}
		}
		// /boot is on a virtio-blk PCI device, which the boot binds after the network card
		// (PCI autoprobe is off while virtio_pci loads): its mount proves that binding, and
		// autoprobe must be back on for devices plugged in later.
		for _, m := range []string{"/proc proc", "/sys sysfs", "/dev devtmpfs", "/dev/pts devpts",
			"/dev/shm tmpfs", "/run tmpfs", "/tmp tmpfs", "/sys/fs/cgroup cgroup2", "/boot vfat"} {
			if !contains(info.Mounts, m) {
				t.Errorf("mount %q missing; mounts: %v", m, info.Mounts)
			}
		}
		var autoprobe struct{ Content string }
		mustJSON(t, vm.Get(t, testPort, "/file?path=/sys/bus/pci/drivers_autoprobe"), &autoprobe)
		if strings.TrimSpace(autoprobe.Content) != "1" {
			t.Errorf("/sys/bus/pci/drivers_autoprobe = %q after the boot, want 1", autoprobe.Content)
		}
	})

	vm.Run(t, "kernel module requests are answered", func(t *testing.T) {
		// Mounting squashfs makes the kernel run /sbin/modprobe fs-squashfs; the image carries
		// the module without loading it at boot.
		var r struct {
			Before, After bool
			MountErr      string
		}
		mustJSON(t, vm.Get(t, testPort, "/filesystem?type=squashfs"), &r)
		if r.Before {
			t.Fatalf("squashfs was already registered before the request; the test proves nothing")
		}
		if !r.After {
			t.Errorf("squashfs not registered after mount asked for it (mount: %s)", r.MountErr)
		}
	})

	vm.Run(t, "orphans are reaped", func(t *testing.T) {
		var o struct {
			Pid, Ppid int
			State     string
		}
		mustJSON(t, vm.Get(t, testPort, "/orphan"), &o)
		if o.Ppid != 1 {
			t.Fatalf("grandchild %d has parent %d, want 1 (re-parented to PID 1)", o.Pid, o.Ppid)
		}
		// The grandchild lives 700ms; once it exits, only PID 1 can reap it.
		deadline := time.Now().Add(15 * time.Second)
		for {
			var p struct{ State string }
			mustJSON(t, vm.Get(t, testPort, "/proc/"+strconv.Itoa(o.Pid)), &p)
			if p.State == "gone" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("orphan %d still in state %s after 15s", o.Pid, p.State)
			}
			time.Sleep(100 * time.Millisecond) // polling the guest: there is no event to wait on
		}
		var z struct{ Zombies []string }
		mustJSON(t, vm.Get(t, testPort, "/zombies"), &z)
		if len(z.Zombies) > 0 {
			t.Errorf("zombies remain: %v", z.Zombies)
		}
	})

	vm.Run(t, "oneshot setup ran before web", func(t *testing.T) { oneshotBeforeWeb(t, vm) })
	vm.Run(t, "reload-config adds a service, web keeps its pid", func(t *testing.T) { reloadAddsService(t, vm) })

	// Last: SIGUSR2 to PID 1 from inside powers the machine off.
	vm.Post(t, testPort, "/signal-init?sig=USR2")
	vm.WaitFor(`power request via="signal SIGUSR2" action=poweroff`, 30*time.Second)
	vm.WaitFor(`step done step="stop services"`, 30*time.Second)
	vm.WaitFor(`shutdown complete action=poweroff`, 30*time.Second)
	if code := vm.WaitExit(30 * time.Second); code != 0 {
		t.Errorf("QEMU exited %d after poweroff, want 0", code)
	}
	console = strings.Join(vm.Console(), "\n")
	if !strings.Contains(console, "service=web") || !strings.Contains(console, "stopped service=web") {
		t.Errorf("console does not show web stopping")
	}
}

// TestQEMUBrokenConfig boots with a config that has an error: the console must name the file,
// the line and the problem, and PID 1 must stay up and still act on ctrl-alt-del.
func TestQEMUBrokenConfig(t *testing.T) {
	t.Parallel()
	vmlinuz, modules := kernel(t, "amd64")
	initrd, disk := testImage(t, modules)
	vm := Boot(t, BootOptions{Kernel: vmlinuz, Initrd: initrd, Disk: disk,
		Append: "baton.config=/etc/baton/broken.toml"})
	line := vm.WaitFor(`config error`, bootTimeout)
	for _, want := range []string{"/etc/baton/broken.toml:6:", "service[0].restart", `\"sometimes\" is not a restart policy`} {
		if !strings.Contains(line, want) {
			t.Errorf("config error line %q lacks %q", line, want)
		}
	}
	vm.WaitFor(`baton: all services started.*failed_steps=1`, bootTimeout)
	// PID 1 is alive if it turns ctrl-alt-del (SIGINT, after CAD_OFF) into an orderly reboot.
	vm.Monitor("sendkey ctrl-alt-delete")
	vm.WaitFor(`power request via="signal SIGINT" action=reboot`, 30*time.Second)
	vm.WaitFor(`shutdown complete action=reboot`, 30*time.Second)
	if code := vm.WaitExit(30 * time.Second); code != 0 {
		t.Errorf("QEMU exited %d after reboot with -no-reboot, want 0", code)
	}
	if c := strings.Join(vm.Console(), "\n"); panicLine.MatchString(c) {
		t.Errorf("kernel panicked")
	}
}

func mustJSON(t *testing.T, body string, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(body), v); err != nil {
		t.Fatalf("decode %q: %v", body, err)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// TestQEMUDHCP boots with the address from DHCP (QEMU's user network): the lease, the default
// route and /etc/resolv.conf, and the web service answers through the port forward.
func TestQEMUDHCP(t *testing.T) {
	t.Parallel()
	vmlinuz, modules := kernel(t, "amd64")
	initrd, disk := testImage(t, modules)
	vm := Boot(t, BootOptions{Kernel: vmlinuz, Initrd: initrd, Disk: disk, Append: "baton.config=/etc/baton/dhcp.toml",
		Forward: []int{webPort, testPort}, RNG: true})
	line := vm.WaitFor(`baton: dhcp lease`, bootTimeout)
	for _, want := range []string{"interface=eth0", "address=10.0.2.15/24", "router=[10.0.2.2]", "dns=[10.0.2.3]"} {
		if !strings.Contains(line, want) {
			t.Errorf("lease line %q lacks %q", line, want)
		}
	}
	vm.WaitFor(`baton: all services started.*failed_steps=0`, bootTimeout)
	if body := vm.Get(t, webPort, "/"); !strings.Contains(body, "on baton-dhcp") {
		t.Errorf("GET / = %q", body)
	}
	var info struct {
		Resolv string
		Routes []string
	}
	mustJSON(t, vm.Get(t, testPort, "/info"), &info)
	if info.Resolv != "nameserver 10.0.2.3" {
		t.Errorf("/etc/resolv.conf = %q", info.Resolv)
	}
	// The kernel's routing table, not the lease's log line: the lease's router as the default
	// route, and the lease's subnet on the link.
	for _, want := range []string{"eth0 0.0.0.0/0 via 10.0.2.2", "eth0 10.0.2.0/24"} {
		if !contains(info.Routes, want) {
			t.Errorf("route %q missing; /proc/net/route: %v", want, info.Routes)
		}
	}
	vm.Post(t, testPort, "/signal-init?sig=USR2")
	if code := vm.WaitExit(60 * time.Second); code != 0 {
		t.Errorf("QEMU exited %d after poweroff", code)
	}
}
