package main

import (
	"fmt"
	"sort"
	"strings"
	"time"
)

// table prints one row per mode: the counts per run, the times as median / max over the runs.
func table(modes []*mode) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%-8s %-14s %-22s %-17s %-17s %-15s %-15s\n", "", "kept", "requests failed", "longest line wait", "longest request",
		"downtime", "loaded→up")
	fmt.Fprintf(&b, "%-8s %-14s %-22s %-17s %-17s %-15s %-15s\n", "mode", "(per run)", "(per run, of answered)", "(median / max)", "(median / max)",
		"(median / max)", "(median / max)")
	for _, m := range modes {
		if len(m.Runs) == 0 {
			fmt.Fprintf(&b, "%-8s %s\n", m.ID, m.Status)
			continue
		}
		var kept, failed []string
		var line, req, down, up []time.Duration
		for _, r := range m.Runs {
			kept = append(kept, fmt.Sprintf("%d/%d", r.Kept, r.Conns))
			failed = append(failed, fmt.Sprintf("%d/%d", r.Requests.Failed, r.Requests.Answered))
			line, req = append(line, r.Lines.MaxStall), append(req, r.Requests.Longest)
			down, up = append(down, r.Downtime), append(up, r.LoadedToUp)
		}
		fmt.Fprintf(&b, "%-8s %-14s %-22s %-17s %-17s %-15s %-15s\n", m.ID, strings.Join(kept, " "), strings.Join(failed, " "),
			medMax(line), medMax(req), medMax(down), medMax(up))
		if m.Status != "" {
			fmt.Fprintf(&b, "%-8s %s\n", "", m.Status)
		}
	}
	b.WriteString("\n")
	for _, m := range modes {
		fmt.Fprintf(&b, "%-8s %s\n", m.ID, m.What)
		for i, r := range m.Runs {
			fmt.Fprintf(&b, "  run %d: load %.1fs (%s)\n", i+1, r.Load.Seconds(), r.How)
			for _, s := range []string{r.Dumped, r.Restored} {
				if s != "" {
					fmt.Fprintf(&b, "         %s\n", s)
				}
			}
			for _, e := range append(append([]string(nil), r.Lines.Errs...), r.Requests.Errs...)[:min(3, len(r.Lines.Errs)+len(r.Requests.Errs))] {
				fmt.Fprintf(&b, "         client: %s\n", e)
			}
		}
		for _, s := range m.Retried {
			fmt.Fprintf(&b, "  retried: %s\n", s)
		}
	}
	b.WriteString("kept: long-lived connections that answered every line to the end (a line unanswered within the 30 s\n" +
		"timeout breaks its connection); line wait: the longest wait for a line that was answered; a request that\n" +
		"failed counts at its timeout; downtime: the 10 ms poller's last answer before the kexec → first after;\n" +
		"loaded→up: console, \"kexec kernel loaded\" → \"all services started\".\n")
	return b.String()
}

// medMax is "median / max" in seconds; the median of an even count is the mean of the middle two.
func medMax(ds []time.Duration) string {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	med := s[len(s)/2]
	if len(s)%2 == 0 {
		med = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return fmt.Sprintf("%.1fs / %.1fs", med.Seconds(), s[len(s)-1].Seconds())
}
