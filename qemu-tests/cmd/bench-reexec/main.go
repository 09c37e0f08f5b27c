// Command bench-reexec measures initctl reexec (baton replacing its own process image, every
// service kept): the pause (services' loops frozen in the old image → running in the new
// one) and what clients see (failures; latency p99 in steady state and during re-execs). On
// the host in subreaper mode, and with -qemu as PID 1 of the demo appliance, where the same
// change — a new init binary — is also applied the other way, by a kexec, for comparison.
//
//	go run ./qemu-tests/cmd/bench-reexec -cycles 50 -qemu -o out/bench/reexec.json
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/baton-init/baton/control"
	"github.com/baton-init/baton/qemu-tests/handoffbench"
	"github.com/baton-init/baton/qemu-tests/vm"
)

type report struct {
	Host  handoffbench.ReexecResult  `json:"host"`
	QEMU  *handoffbench.ReexecResult `json:"qemu,omitempty"`
	Kexec []float64                  `json:"qemu_kexec_downtime_ms,omitempty"` // poller's longest gap, per kexec
}

func main() {
	cycles := flag.Int("cycles", 50, "re-execs on the host")
	workers := flag.Int("workers", 16, "concurrent HTTP clients, a new connection per request")
	longLived := flag.Int("long-lived", 16, "long-lived stream connections")
	inQEMU := flag.Bool("qemu", false, "also re-exec PID 1 of the demo appliance under QEMU and kexec it (make image first)")
	qemuCycles := flag.Int("qemu-cycles", 5, "re-execs (and kexecs) under QEMU")
	out := flag.String("o", "out/bench/reexec.json", "JSON output")
	flag.Parse()
	root, _ := os.Getwd()
	dir, err := os.MkdirTemp("", "bench-reexec")
	if err != nil {
		fatal(err)
	}
	defer os.RemoveAll(dir)
	bin, err := handoffbench.Build(root, dir)
	if err != nil {
		fatal(err)
	}
	a, err := handoffbench.Start(bin, dir, true)
	if err != nil {
		fatal(err)
	}
	var rep report
	rep.Host = handoffbench.ReexecPhase(a, "", *cycles, *workers, *longLived)
	rep.Host.Name = "reexec (host)"
	if err := a.Stop(); err != nil {
		fatal(err)
	}
	rows := []handoffbench.ReexecResult{rep.Host}
	if *inQEMU {
		v2, err := handoffbench.BuildInitVariant(root, dir, "init-v2", "main.version=v2-bench")
		if err != nil {
			fatal(err)
		}
		q, kx := qemuPhase(v2, *qemuCycles, *workers/4, *longLived/4)
		rep.QEMU, rep.Kexec = &q, kx
		rows = append(rows, q)
	}
	fmt.Printf("reexec benchmark: %d HTTP workers (new connection per request), %d long-lived stream connections; QEMU: a quarter of each, through the port forwards, with --binary (a build of its own)\n\n", *workers, *longLived)
	var results []handoffbench.Result
	for _, r := range rows {
		results = append(results, r.Result)
	}
	fmt.Print(handoffbench.Table(results))
	for _, r := range rows {
		fmt.Printf("%-26s pause p50 %.1fms, p99 %.1fms, max %.1fms (%d re-execs)\n", r.Name, r.PauseMs.P50, r.PauseMs.P99, r.PauseMs.Max, r.PauseMs.N)
	}
	if len(rep.Kexec) > 0 {
		fmt.Printf("%-26s HTTP downtime per kexec (same kernel and image, the other way to change the init binary): %v ms\n", "kexec (QEMU guest)", rep.Kexec)
	}
	for _, r := range rows {
		if len(r.Errors) > 0 {
			fmt.Printf("%s: errors: %v\n", r.Name, r.Errors)
		}
	}
	if err := os.MkdirAll(filepath.Dir(*out), 0o755); err != nil {
		fatal(err)
	}
	data, _ := json.MarshalIndent(rep, "", "  ")
	if err := os.WriteFile(*out, data, 0o644); err != nil {
		fatal(err)
	}
	fmt.Printf("\nJSON: %s\n", *out)
}

// qemuPhase boots the demo appliance, re-executes its PID 1 into v2 (and back: each cycle
// uploads v2) under load, then kexecs it as many times under a poller.
func qemuPhase(v2 string, cycles, workers, longLived int) (handoffbench.ReexecResult, []float64) {
	var res handoffbench.ReexecResult
	var kexecs []float64
	t := &vm.ProgramTB{}
	t.Run("bench-reexec (qemu)", func() {
		vmlinuz, _ := vm.Kernel(t, "amd64")
		g := vm.Boot(t, vm.BootOptions{Kernel: vmlinuz, Initrd: "out/initramfs.img", Disk: "out/disk.img", Append: "quiet", Quiet: true,
			Forward: []int{vm.WebPort, vm.StreamPort, vm.ControlPort}, Initctl: "out/bin/initctl", TLSDir: "out/tls"})
		g.WaitFor(`step="start remote control API"`, 180*time.Second)
		c, err := control.NewRemote(fmt.Sprintf("127.0.0.1:%d", g.HostPort(vm.ControlPort)), "out/tls")
		if err != nil {
			t.Fatalf("%v", err)
		}
		a := &handoffbench.Appliance{Client: c, WebAddr: fmt.Sprintf("127.0.0.1:%d", g.HostPort(vm.WebPort)),
			StreamAddr: fmt.Sprintf("127.0.0.1:%d", g.HostPort(vm.StreamPort))}
		res = handoffbench.ReexecPhase(a, v2, cycles, workers, longLived)
		res.Name = "reexec (QEMU guest)"
		p := vm.StartPoller(g, vm.WebPort)
		p.WaitAnswers(t, 1, 60*time.Second)
		for i := 0; i < cycles; i++ {
			at := time.Now()
			g.Initctl(t, "kexec")
			g.WaitFor(`kexec_core: Starting new kernel`, 120*time.Second)
			g.WaitFor(`step="start remote control API"`, 180*time.Second)
			gap := p.WaitGap(t, at, 120*time.Second)
			kexecs = append(kexecs, float64(gap.To.Sub(gap.From).Milliseconds()))
		}
		p.End()
		g.Initctl(t, "poweroff")
		g.WaitExit(60 * time.Second)
	})
	return res, kexecs
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "bench-reexec:", err)
	os.Exit(1)
}
