package main

import (
	"fmt"
	"math"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// summary is a row's medians.
type summary struct {
	Min, Median, Max time.Duration
	FirstAnswer      time.Duration
	Steps            map[string]time.Duration
}

func (r *row) summary() (summary, bool) {
	if len(r.Runs) == 0 {
		return summary{}, false
	}
	var d, f []time.Duration
	s := summary{Steps: map[string]time.Duration{}}
	for _, x := range r.Runs {
		d, f = append(d, x.Downtime), append(f, x.FirstAnswer)
	}
	s.Min, s.Median, s.Max = stats(d)
	_, s.FirstAnswer, _ = stats(f)
	for _, st := range steps {
		var ds []time.Duration
		for _, x := range r.Runs {
			if v, ok := x.Steps[st]; ok {
				ds = append(ds, v)
			}
		}
		if len(ds) > 0 {
			_, s.Steps[st], _ = stats(ds)
		}
	}
	return s, true
}

// stats returns min, median and max; the median of an even count is the mean of the middle two.
func stats(ds []time.Duration) (lo, med, hi time.Duration) {
	s := slices.Clone(ds)
	slices.Sort(s)
	n := len(s)
	med = s[n/2]
	if n%2 == 0 {
		med = (s[n/2-1] + s[n/2]) / 2
	}
	return s[0], med, s[n-1]
}

func find(rows []*row, id string) (summary, bool) {
	for _, r := range rows {
		if r.ID == id {
			return r.summary()
		}
	}
	return summary{}, false
}

// ratio is a row's median downtime over the seed method's, or NaN without both.
func ratio(rows []*row, s summary) float64 {
	seed, ok := find(rows, "seed-kexec")
	if !ok || seed.Median == 0 {
		return math.NaN()
	}
	return s.Median.Seconds() / seed.Median.Seconds()
}

func table(rows []*row) string {
	var b strings.Builder
	sec := func(d time.Duration) string { return fmt.Sprintf("%.2f", d.Seconds()) }
	fmt.Fprintf(&b, "%-15s %4s  %6s %6s %6s  %6s │", "HTTP downtime", "runs", "min", "median", "max", "×seed")
	for _, st := range steps {
		fmt.Fprintf(&b, " %12s", st)
	}
	fmt.Fprintf(&b, "  (seconds; breakdown: medians)\n")
	for _, r := range rows {
		s, ok := r.summary()
		if !ok {
			fmt.Fprintf(&b, "%-15s %4d  %s\n", r.ID, 0, firstLine(r.Status))
			continue
		}
		x := "—"
		if q := ratio(rows, s); !math.IsNaN(q) {
			x = fmt.Sprintf("%.2f", q)
		}
		fmt.Fprintf(&b, "%-15s %4d  %6s %6s %6s  %6s │", r.ID, len(r.Runs), sec(s.Min), sec(s.Median), sec(s.Max), x)
		for _, st := range steps {
			v, ok := s.Steps[st]
			cell := "—"
			if ok {
				cell = sec(v)
			}
			fmt.Fprintf(&b, " %12s", cell)
		}
		b.WriteString("\n")
	}
	b.WriteString("\n")
	for _, r := range rows {
		fmt.Fprintf(&b, "%-15s %s\n", r.ID, r.What)
		if r.Status != "" && len(r.Runs) > 0 {
			fmt.Fprintf(&b, "%-15s %s (after %d runs)\n", "", firstLine(r.Status), len(r.Runs))
		}
		for _, why := range r.Retried {
			fmt.Fprintf(&b, "%-15s retried %s\n", "", why)
		}
		var notes []string
		for _, x := range r.Runs {
			if x.Note != "" && !slices.Contains(notes, x.Note) {
				notes = append(notes, x.Note)
			}
		}
		if len(notes) > 0 {
			fmt.Fprintf(&b, "%-15s guest said: %s\n", "", strings.Join(notes, ", "))
		}
	}
	b.WriteString("\nsteps: request = command → the guest saw it (baton: TLS API call under TCG; seed: a connection to\n" +
		"port 81); load = the next kernel loaded, service still up; shutdown = → baton's \"shutdown complete\" / the\n" +
		"seed's \"kexec -e\" line; jump = → the new kernel starts (kexec: purgatory, decompression; reboot: firmware,\n" +
		"loader, decompression); kernel→/init = the new kernel's clock at /init; /init→ready = baton's READY=1 of\n" +
		"web / the seed's \"httpd started\"; ready→answer = → the poller's first good answer.\n")
	b.WriteString("\ntargets (issue 10; reported, not enforced):\n")
	for _, tg := range targets(rows) {
		fmt.Fprintf(&b, "  %-48s %s\n", tg.Name, tg.verdict())
	}
	return b.String()
}

// target is one of the goals, checked against this run's medians.
type target struct {
	Name  string  `json:"name"`
	Value float64 `json:"value"`
	Limit float64 `json:"limit"`
	Met   *bool   `json:"met"` // nil: not measurable in this run
	Why   string  `json:"why,omitempty"`
}

func (tg target) verdict() string {
	if tg.Met == nil {
		return "not measured: " + tg.Why
	}
	v := "MET"
	if !*tg.Met {
		v = "NOT MET"
	}
	return fmt.Sprintf("%s (%.2f vs %.2f)", v, tg.Value, tg.Limit)
}

func targets(rows []*row) []target {
	check := func(name string, value, limit float64, why string) target {
		tg := target{Name: name, Value: value, Limit: limit}
		if why != "" {
			tg.Why = why
			return tg
		}
		met := value <= limit
		tg.Met = &met
		return tg
	}
	fast, okFast := find(rows, "kexec-fast")
	seed, okSeed := find(rows, "seed-kexec")
	bios, okBios := find(rows, "reboot-seabios")
	missing := func(oks ...bool) string {
		for _, ok := range oks {
			if !ok {
				return "a row it needs was not measured"
			}
		}
		return ""
	}
	var out []target
	q := 0.0
	if okFast && okSeed {
		q = fast.Median.Seconds() / seed.Median.Seconds()
	}
	out = append(out, check("fast kexec downtime ≤ 0.5× the seed method's", q, 0.5, missing(okFast, okSeed)))
	out = append(out, check("fast kexec downtime < SeaBIOS reboot's (s)", fast.Median.Seconds(), bios.Median.Seconds(), missing(okFast, okBios)))
	out = append(out, check("fast kexec /init → web ready ≤ 0.3 s", fast.Steps[stepInit].Seconds(), 0.3, missing(okFast)))
	return out
}

// jsonReport is out/bench/kexec.json: every run in seconds, each row's medians and ratio to
// the seed method, and the targets.
func jsonReport(e *env, rows []*row, runs int) map[string]any {
	secs := func(d time.Duration) float64 { return math.Round(d.Seconds()*1000) / 1000 }
	stepSecs := func(m map[string]time.Duration) map[string]float64 {
		out := map[string]float64{}
		for k, v := range m {
			out[k] = secs(v)
		}
		return out
	}
	var methods []map[string]any
	for _, r := range rows {
		m := map[string]any{"id": r.ID, "what": r.What}
		if r.Status != "" {
			m["status"] = r.Status
		}
		var rs []map[string]any
		for _, x := range r.Runs {
			rr := map[string]any{"downtime_s": secs(x.Downtime), "command_to_first_answer_s": secs(x.FirstAnswer), "breakdown_s": stepSecs(x.Steps),
				"host_load_1min": x.HostLoad}
			if x.Note != "" {
				rr["guest_said"] = x.Note
			}
			rs = append(rs, rr)
		}
		m["runs"] = rs
		if len(r.Retried) > 0 {
			m["retried"] = r.Retried
		}
		if s, ok := r.summary(); ok {
			sm := map[string]any{"min_s": secs(s.Min), "median_s": secs(s.Median), "max_s": secs(s.Max),
				"command_to_first_answer_median_s": secs(s.FirstAnswer), "breakdown_median_s": stepSecs(s.Steps)}
			if q := ratio(rows, s); !math.IsNaN(q) {
				sm["ratio_to_seed"] = math.Round(q*1000) / 1000
			}
			m["summary"] = sm
		}
		methods = append(methods, m)
	}
	return map[string]any{
		"kernel": filepath.Base(e.vmlinuz), "accel": accel(), "runs_per_method": runs,
		"baton_initramfs_bytes": size(e.initrd), "seed_initramfs_bytes": size(e.seedInitrd),
		"steps": steps, "methods": methods, "targets": targets(rows),
	}
}
