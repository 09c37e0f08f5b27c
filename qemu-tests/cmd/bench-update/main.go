// Command bench-update measures what initctl update costs the demo appliance's clients, from
// outside the way the seed measured reboots: a host-side poller requests the web service every
// 10 ms (a new connection each, 10 s timeout) while the appliance, booted through OVMF from its
// boot disk, takes in turn
//
//	(a) a services-only update (web's binary changes): applied in place, over the held socket;
//	(b) a kernel update (the same image with the other Debian kernel): one kexec into the slot;
//	(c) the same image change through the firmware, as reboot-based updaters do it: the updated
//	    slot is the default, initctl reboot.
//
// For each it reports failed requests and the longest time without an answer (the downtime;
// for (a) it is the worst latency, since nothing stops). It builds its two images itself from
// out/bin (make image) and writes a table and out/bench/update.json.
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/baton-init/baton/images"
	"github.com/baton-init/baton/qemu-tests/vm"
)

type result struct {
	Name     string          `json:"name"`
	Downtime []time.Duration `json:"longest_without_answer"`
	Failed   []int           `json:"failed_requests"`
	Answers  []int           `json:"answers"`
}

func main() {
	runs := flag.Int("runs", 3, "updates per method")
	out := flag.String("o", "out/bench/update.json", "JSON output")
	verbose := flag.Bool("v", false, "console and harness output")
	flag.Parse()
	t := &vm.ProgramTB{Verbose: *verbose}
	t.Run("bench-update", func() { bench(t, *runs, *out) })
}

func bench(t *vm.ProgramTB, runs int, out string) {
	generic, modules := vm.Kernel(t, "amd64")
	cloud, cloudModules := vm.Kernel(t, "cloud-amd64")
	dir := t.TempDir()
	img := func(version string) string {
		web := filepath.Join(dir, "web-"+version)
		cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w -X main.version="+version, "-o", web, "./examples/web")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("build web: %v\n%s", err, b)
		}
		i, _, err := images.Build(images.Spec{Config: "examples/baton.toml", Init: "out/bin/init", BinDir: "out/bin",
			Files: map[string]string{"/bin/web": web}, KernelModules: []string{modules, cloudModules},
			Carry: []string{"nls_cp437", "nls_utf8", "nls_ascii", "virtio_rng"}, TLSDir: "out/tls"})
		if err != nil {
			t.Fatalf("image: %v", err)
		}
		if _, err := i.AddManifest(generic); err != nil {
			t.Fatalf("%v", err)
		}
		var buf bytes.Buffer
		if err := i.Write(&buf, "zstd"); err != nil {
			t.Fatalf("%v", err)
		}
		p := filepath.Join(dir, version+".img")
		os.WriteFile(p, buf.Bytes(), 0o644)
		return p
	}
	v1, v2 := img("bench1"), img("bench2")
	disk := filepath.Join(dir, "disk.img")
	if err := images.BuildDisk(disk, images.DiskSpec{Bootloader: "/usr/lib/systemd/boot/efi/systemd-bootx64.efi",
		Kernel: generic, Initrd: v1, Cmdline: "console=ttyS0 panic=-1 quiet"}); err != nil {
		t.Fatalf("boot disk: %v", err)
	}
	g := vm.Boot(t, vm.BootOptions{Disk: disk, Reboot: true, Append: "quiet", Forward: []int{vm.WebPort, vm.ControlPort},
		Initctl: "out/bin/initctl", TLSDir: "out/tls", Quiet: !t.Verbose})
	g.WaitFor(`baton: all services started`, 180*time.Second)
	inPlace, kexec, firmware := result{Name: "in place (services only)"}, result{Name: "kexec (kernel update)"}, result{Name: "firmware reboot"}
	imgs, kernels := []string{v2, v1}, []string{cloud, generic}
	running := generic
	for i := 0; i < runs; i++ {
		image := imgs[i%2]
		measure(t, g, &inPlace, "update", "--kernel", running, "--initrd", image)
		running = kernels[i%2]
		measure(t, g, &kexec, "update", "--kernel", running, "--initrd", image)
		// The kernel update, applied again the way reboot-based updaters apply one: through
		// the firmware, which boots the slot the update made its default.
		measure(t, g, &firmware, "reboot")
		fmt.Fprintf(os.Stderr, "run %d: in place %v (%d failed), kexec %v, firmware %v\n", i+1,
			last(inPlace.Downtime), last(inPlace.Failed), last(kexec.Downtime), last(firmware.Downtime))
	}
	g.Initctl(t, "poweroff")
	g.WaitExit(60 * time.Second)
	all := []result{inPlace, kexec, firmware}
	fmt.Printf("update benchmark: demo appliance booted through OVMF, Debian kernels, QEMU TCG, %d runs each\n\n", runs)
	fmt.Print(table(all))
	data, _ := json.MarshalIndent(all, "", "  ")
	os.MkdirAll(filepath.Dir(out), 0o755)
	if err := os.WriteFile(out, data, 0o644); err != nil {
		t.Fatalf("%v", err)
	}
	fmt.Printf("\nJSON: %s\n", out)
}

func last[T any](s []T) T { return s[len(s)-1] }

// measure runs one initctl command under the poller and records, from a moment before it to
// the first answer after it returned (and after a reboot it asked for), the longest time
// without an answer and the failed requests.
func measure(t *vm.ProgramTB, g *vm.VM, r *result, args ...string) {
	p := startPoller(g.URL(vm.WebPort, "/"))
	time.Sleep(500 * time.Millisecond) // answers before: the steady state
	if args[0] == "update" {
		args = append(args, "--timeout", "5m")
	}
	out, code := g.Initctl(t, args...)
	if code != 0 {
		p.end()
		t.Fatalf("initctl %s: exit %d\n%s", strings.Join(args, " "), code, out)
	}
	kexecd := strings.Contains(out, "kexec into slot")
	if args[0] == "reboot" {
		// The console's cursor is past the last boot's lines (measure leaves it there), so
		// these are the reboot's.
		g.WaitFor(`shutdown complete action=reboot`, 60*time.Second)
		g.WaitFor(`baton starting as PID 1`, 120*time.Second) // through the firmware and the loader ("quiet": no kernel lines)
	}
	if args[0] == "reboot" || kexecd {
		g.WaitFor(`baton: all services started`, 180*time.Second)
	}
	if !p.answeredAfter(time.Now(), 120*time.Second) {
		p.end()
		t.Fatalf("no answer within 120s after initctl %s", args[0])
	}
	gap, failed, answers := p.end()
	r.Downtime, r.Failed, r.Answers = append(r.Downtime, gap), append(r.Failed, failed), append(r.Answers, answers)
}

// poller requests url every 10 ms, each request on a new connection in its own goroutine, and
// keeps the time of every good answer.
type poller struct {
	stop    chan struct{}
	wg      sync.WaitGroup
	mu      sync.Mutex
	answers []time.Time
	failed  int
}

func startPoller(url string) *poller {
	p := &poller{stop: make(chan struct{})}
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	slots := make(chan struct{}, 200)
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-p.stop:
				return
			case <-tick.C:
			}
			select {
			case slots <- struct{}{}:
			default:
				continue
			}
			p.wg.Add(1)
			go func() {
				defer p.wg.Done()
				defer func() { <-slots }()
				resp, err := hc.Get(url)
				ok := err == nil && resp.StatusCode == 200
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
				p.mu.Lock()
				defer p.mu.Unlock()
				if ok {
					p.answers = append(p.answers, time.Now())
				} else {
					p.failed++
				}
			}()
		}
	}()
	return p
}

func (p *poller) answeredAfter(at time.Time, timeout time.Duration) bool {
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		p.mu.Lock()
		n := len(p.answers)
		ok := n > 0 && p.answers[n-1].After(at)
		p.mu.Unlock()
		if ok {
			return true
		}
	}
	return false
}

// end stops the poller and returns the longest time between two answers, the failures and
// the answers.
func (p *poller) end() (time.Duration, int, int) {
	close(p.stop)
	p.wg.Wait()
	sort.Slice(p.answers, func(i, j int) bool { return p.answers[i].Before(p.answers[j]) })
	var gap time.Duration
	for i := 1; i < len(p.answers); i++ {
		gap = max(gap, p.answers[i].Sub(p.answers[i-1]))
	}
	return gap, p.failed, len(p.answers)
}

func stats(ds []time.Duration) (lo, med, hi time.Duration) {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[0], s[len(s)/2], s[len(s)-1]
}

func table(rs []result) string {
	var b strings.Builder
	sec := func(d time.Duration) string { return fmt.Sprintf("%.2fs", d.Seconds()) }
	fmt.Fprintf(&b, "%-26s %9s %9s %9s   %s\n", "longest without an answer", "min", "median", "max", "failed requests (per run)")
	med := map[string]time.Duration{}
	for _, r := range rs {
		lo, m, hi := stats(r.Downtime)
		med[r.Name] = m
		fmt.Fprintf(&b, "%-26s %9s %9s %9s   %v of %v answered\n", r.Name, sec(lo), sec(m), sec(hi), r.Failed, r.Answers)
	}
	k, f, i := med["kexec (kernel update)"], med["firmware reboot"], med["in place (services only)"]
	fmt.Fprintf(&b, "ratios of the medians: firmware / kexec %.2f, kexec / in place %.1f, firmware / in place %.1f\n",
		f.Seconds()/k.Seconds(), k.Seconds()/i.Seconds(), f.Seconds()/i.Seconds())
	return b.String()
}
