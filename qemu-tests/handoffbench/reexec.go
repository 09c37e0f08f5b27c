package handoffbench

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/baton-init/baton/control"
)

// BuildInitVariant builds a static init binary (what initctl reexec --binary accepts) into
// dir/name, with -X settings (e.g. main.reexecFault=trial, main.version=v2).
func BuildInitVariant(root, dir, name string, xs ...string) (string, error) {
	out := filepath.Join(dir, name)
	ld := "-s -w"
	for _, x := range xs {
		ld += " -X " + x
	}
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags", ld, "-o", out, "./init")
	cmd.Dir = root
	cmd.Env = append(cmd.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build init (%v): %v\n%s", xs, err, b)
	}
	return out, nil
}

// ReexecResult is a phase of re-execs of baton itself under load.
type ReexecResult struct {
	Result
	PauseMs Percentiles `json:"pause"` // loops frozen in the old image → running in the new one
}

// ReexecPhase re-executes baton (binary "": the running one) cycles times while the load runs;
// each cycle waits for the new image to answer.
func ReexecPhase(a *Appliance, binary string, cycles, workers, longLived int) ReexecResult {
	load := &Load{Workers: workers, LongLived: longLived}
	load.Begin(a.WebAddr, a.StreamAddr)
	time.Sleep(300 * time.Millisecond) // steady state before the first cycle
	var windows []window
	var cycleTimes, pauses []time.Duration
	var errs []string
	for i := 0; i < cycles; i++ {
		from := time.Now()
		st, err := a.Client.Reexec(binary)
		if err == nil {
			var info control.VersionInfo
			if info, err = a.Client.ReexecWait(st.ID, 3*time.Minute); err == nil && info.Last != nil {
				pauses = append(pauses, time.Duration(info.Last.PauseMs*float64(time.Millisecond)))
			}
		}
		if err != nil {
			errs = append(errs, fmt.Sprintf("reexec %d: %v", i, err))
		}
		to := time.Now()
		windows = append(windows, window{from, to})
		cycleTimes = append(cycleTimes, to.Sub(from))
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond)
	load.End()
	r := summarize(load, "reexec", "reexec", cycles, longLived, windows, cycleTimes, errs)
	return ReexecResult{Result: r, PauseMs: percentiles(pauses)}
}
