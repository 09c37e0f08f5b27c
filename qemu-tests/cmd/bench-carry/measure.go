package main

import (
	"fmt"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/baton-init/baton/qemu-tests/carryload"
	"github.com/baton-init/baton/qemu-tests/vm"
)

// The load of one kexec: TestQEMUKeepConnections'.
const (
	streamConns    = 16
	requestWorkers = 4
)

// attempts is how often one kexec is tried before its mode is given up: a TCG guest on a
// starved host sometimes panics at boot ("IO-APIC + timer doesn't work").
const attempts = 3

// mode is one config, its guest, and what its kexecs measured.
type mode struct {
	ID     string `json:"id"`
	What   string `json:"what"`
	Config string `json:"config"` // baton.config= of its guest
	Keep   bool   `json:"keep_connections"`
	Runs   []run  `json:"runs"`
	// Retried are the failures of kexecs that were taken again on a fresh guest; Status ends
	// the mode ("failed: …").
	Retried []string `json:"retried,omitempty"`
	Status  string   `json:"status,omitempty"`

	guest *vm.VM
}

// run is one kexec under load.
type run struct {
	Kept       int                      `json:"connections_kept"`
	Conns      int                      `json:"connections"`
	Lines      carryload.LinesResult    `json:"lines"`
	Requests   carryload.RequestsResult `json:"requests"`
	Downtime   time.Duration            `json:"downtime"`           // the poller's last answer before → first after
	Load       time.Duration            `json:"load"`               // command → kexec kernel loaded
	LoadedToUp time.Duration            `json:"loaded_to_up"`       // kexec kernel loaded → all services started
	Dumped     string                   `json:"dumped,omitempty"`   // the old kernel's "connections dumped" line
	Restored   string                   `json:"restored,omitempty"` // the new kernel's "carried connections restored"
	How        string                   `json:"how,omitempty"`      // baton's kexec method note
}

// bench takes the modes' kexecs in turns, each mode on its own guest, booted once and booted
// again only after a failure, so a change in the host's load (other QEMU jobs) shifts both.
func bench(t *vm.ProgramTB, e *env, modes []*mode, runs int) {
	for i := 0; i < runs; i++ {
		for _, m := range modes {
			if m.Status != "" {
				continue
			}
			var res run
			var err error
			for try := 1; try <= attempts; try++ {
				if res, err = attempt(t, e, m); err == nil {
					break
				}
				fmt.Fprintf(os.Stderr, "%-8s run %d, try %d: failed: %v\n", m.ID, i+1, try, err)
				m.Retried = append(m.Retried, fmt.Sprintf("run %d, try %d: %s", i+1, try, firstLine(err.Error())))
				if m.guest != nil {
					m.guest.Monitor("quit") // the next try boots a fresh guest
					m.guest = nil
				}
			}
			if err != nil {
				m.Status = "failed: " + err.Error()
				continue
			}
			m.Runs = append(m.Runs, res)
			fmt.Fprintf(os.Stderr, "%-8s run %d: %d of %d kept, %d requests failed, longest line %v, request %v, downtime %.2fs, loaded→up %.2fs\n",
				m.ID, i+1, res.Kept, res.Conns, res.Requests.Failed, res.Lines.MaxStall.Round(time.Millisecond),
				res.Requests.Longest.Round(time.Millisecond), res.Downtime.Seconds(), res.LoadedToUp.Seconds())
		}
	}
	for _, m := range modes {
		if m.guest != nil {
			m.guest.Initctl(t, "poweroff")
		}
	}
}

// attempt boots the mode's guest if it has none and measures one kexec; a harness failure
// (vm.Fatal) becomes an error.
func attempt(t *vm.ProgramTB, e *env, m *mode) (res run, err error) {
	defer func() {
		if p := recover(); p != nil {
			f, ok := p.(vm.Fatal)
			if !ok {
				panic(p)
			}
			err = fmt.Errorf("%s", f.Msg)
		}
	}()
	if m.guest == nil {
		m.guest = vm.Boot(t, vm.BootOptions{Kernel: e.vmlinuz, Initrd: e.initrd, Disk: e.disk,
			Append: "quiet baton.config=" + m.Config, Forward: []int{vm.WebPort, vm.ControlPort, vm.StreamPort},
			Initctl: e.initctl, TLSDir: e.tlsDir, Quiet: !t.Verbose})
		m.guest.WaitFor(`baton: all services started`, 5*time.Minute)
	}
	return measure(t, m.guest, m.Keep), nil
}

var (
	kexecHow = regexp.MustCompile(`how=("[^"]*"|\S+)`)
	dumped   = regexp.MustCompile(`connections dumped for the next kernel.*`)
	restored = regexp.MustCompile(`carried connections restored.*`)
)

// measure takes one kexec into the running kernel under the load, and waits until the load
// has seen the guest back: each kept connection three more lines (when they are kept), the
// request loop eight more answers.
func measure(t *vm.ProgramTB, g *vm.VM, keep bool) run {
	first := len(g.Console())
	p := vm.StartPoller(g, vm.WebPort)
	defer p.End()
	p.WaitAnswers(t, 20, 60*time.Second)
	web := carryload.StartRequests(g.URL(vm.WebPort, "/"), requestWorkers)
	lines, err := carryload.StartLines(fmt.Sprintf("127.0.0.1:%d", g.HostPort(vm.StreamPort)), streamConns)
	if err != nil {
		web.Stop()
		t.Fatalf("%v", err)
	}
	var r run
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			r.Lines, r.Requests = lines.Stop(), web.Stop()
		}
	}
	defer stop() // a failure below: the clients end before the guest is torn down
	if err := lines.WaitLines(2*streamConns, 60*time.Second); err != nil {
		t.Fatalf("before the kexec: %v", err)
	}
	cmd := time.Now()
	if out, code := g.Initctl(t, "kexec", "--method", "fast"); code != 0 {
		t.Fatalf("initctl kexec --method fast: exit %d: %s", code, out)
	}
	// Under TCG the fast method's in-guest extraction of the kernel takes a minute or more.
	_, loaded := g.WaitForAt(`baton: kexec kernel loaded`, 5*time.Minute)
	_, down := g.WaitForAt(`baton: shutdown complete`, 2*time.Minute)
	g.WaitFor(`baton: baton starting as PID 1`, 3*time.Minute)
	_, up := g.WaitForAt(`baton: all services started`, 5*time.Minute)
	gap := p.WaitGap(t, down, 3*time.Minute)
	r.Load, r.LoadedToUp, r.Downtime = loaded.Sub(cmd), up.Sub(loaded), gap.Length()
	if keep {
		// Not fatal: a connection that did not come back is what this measures.
		if err := lines.WaitLines(lines.Answered()+3*streamConns, 3*time.Minute); err != nil {
			fmt.Fprintf(os.Stderr, "after the kexec: %v\n", err)
		}
	}
	if err := web.WaitAnswered(web.Answered()+8, 3*time.Minute); err != nil {
		fmt.Fprintf(os.Stderr, "after the kexec: %v\n", err)
	}
	stop()
	r.Conns, r.Kept = r.Lines.Conns, r.Lines.Conns-r.Lines.Broken
	for _, l := range g.Console()[first:] {
		if m := kexecHow.FindStringSubmatch(l); m != nil && strings.Contains(l, "kexec kernel loaded") {
			r.How = strings.Trim(m[1], `"`)
		}
		if m := dumped.FindString(l); m != "" {
			r.Dumped = m
		}
		if m := restored.FindString(l); m != "" {
			r.Restored = m
		}
	}
	return r
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}
