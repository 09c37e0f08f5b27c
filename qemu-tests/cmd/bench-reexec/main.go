// Command bench-reexec measures initctl reexec (baton replacing its own process image, every
// service kept): the pause (services' loops frozen in the old image → running in the new
// one) and what clients see (failures; latency p99 in steady state and during re-execs). On
// the host in subreaper mode, and with -qemu as PID 1 of the demo appliance, where the same
// change — a new init binary — is also applied the other way for comparison: initctl update
// with an image that differs only in /init, which the update applies by a kexec.
//
//	go run ./qemu-tests/cmd/bench-reexec -cycles 50 -qemu -qemu-cycles 3 -o out/bench/reexec.json
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/baton-init/baton/qemu-tests/handoffbench"
	"github.com/baton-init/baton/qemu-tests/vm"
)

type report struct {
	Host  handoffbench.ReexecResult  `json:"host"`
	QEMU  *handoffbench.ReexecResult `json:"qemu,omitempty"`
	Kexec []kexecRun                 `json:"qemu_kexec,omitempty"` // the same change (a new /init) by update's kexec
}

func main() {
	cycles := flag.Int("cycles", 50, "re-execs on the host")
	workers := flag.Int("workers", 16, "concurrent HTTP clients, a new connection per request")
	longLived := flag.Int("long-lived", 16, "long-lived stream connections")
	inQEMU := flag.Bool("qemu", false, "also re-exec PID 1 of the demo appliance under QEMU and kexec the same change (make image first)")
	qemuCycles := flag.Int("qemu-cycles", 5, "re-execs (and kexecs) under QEMU")
	out := flag.String("o", "out/bench/reexec.json", "JSON output")
	verbose := flag.Bool("v", false, "console and harness output")
	flag.Parse()
	t := &vm.ProgramTB{Verbose: *verbose}
	t.Run("bench-reexec", func() {
		root, _ := os.Getwd()
		dir := t.TempDir()
		bin, err := handoffbench.Build(root, dir)
		if err != nil {
			t.Fatalf("%v", err)
		}
		a, err := handoffbench.Start(bin, dir, true)
		if err != nil {
			t.Fatalf("%v", err)
		}
		var rep report
		rep.Host = handoffbench.ReexecPhase(a, "", *cycles, *workers, *longLived)
		rep.Host.Name = "reexec (host)"
		if err := a.Stop(); err != nil {
			t.Fatalf("%v", err)
		}
		fmt.Fprintf(os.Stderr, "reexec (host): %d re-execs, %d requests, %d failed, pause p50 %.1fms\n",
			rep.Host.PauseMs.N, rep.Host.Requests, rep.Host.Failed, rep.Host.PauseMs.P50)
		if *inQEMU {
			v2, err := handoffbench.BuildInitVariant(root, dir, "init-v2", "main.version=v2-bench")
			if err != nil {
				t.Fatalf("%v", err)
			}
			q, kx := qemuPhase(t, setupQEMU(t, root, v2), *qemuCycles, *workers/4, *longLived/4)
			rep.QEMU, rep.Kexec = &q, kx
		}
		printReport(rep, *workers, *longLived)
		if err := os.MkdirAll(filepath.Dir(*out), 0o755); err != nil {
			t.Fatalf("%v", err)
		}
		data, _ := json.MarshalIndent(rep, "", "  ")
		if err := os.WriteFile(*out, data, 0o644); err != nil {
			t.Fatalf("%v", err)
		}
		fmt.Printf("\nJSON: %s\n", *out)
	})
}

func printReport(rep report, workers, longLived int) {
	rows := []handoffbench.ReexecResult{rep.Host}
	if rep.QEMU != nil {
		rows = append(rows, *rep.QEMU)
	}
	fmt.Printf("reexec benchmark: %d HTTP workers (new connection per request), %d long-lived stream connections; QEMU (TCG): a quarter of each, through the port forwards, with --binary (a build of its own, uploaded each time)\n\n", workers, longLived)
	var results []handoffbench.Result
	for _, r := range rows {
		results = append(results, r.Result)
	}
	fmt.Print(handoffbench.Table(results))
	for _, r := range rows {
		fmt.Printf("%-26s pause p50 %.1fms, p99 %.1fms, max %.1fms (%d re-execs)\n", r.Name, r.PauseMs.P50, r.PauseMs.P99, r.PauseMs.Max, r.PauseMs.N)
	}
	if len(rep.Kexec) > 0 {
		fmt.Printf("\nthe same change by kexec (QEMU guest): initctl update with an image whose only change is /init, which the update applies by a kexec; host-side poller, 10 ms\n")
		fmt.Printf("%-8s%16s%10s%14s\n", "kexec", "downtime", "failed", "command")
		for i, k := range rep.Kexec {
			if k.Error != "" {
				fmt.Printf("%-8d %s\n", i+1, k.Error)
				continue
			}
			fmt.Printf("%-8d%14.0fms%10d%13.1fs\n", i+1, k.DowntimeMs, k.Failed, k.CommandMs/1000)
		}
	}
	for _, r := range rows {
		if len(r.Errors) > 0 {
			fmt.Printf("%s: errors: %v\n", r.Name, r.Errors)
		}
	}
}
