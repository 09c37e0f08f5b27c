package control

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"
)

// barWidth is the width of the span column: the boot from its first step to its last end.
const barWidth = 32

// writeTimeline prints the boot as it ran: steps and service starts in the order they began,
// each with a bar over the boot's span (bars that overlap ran at the same time) and what it
// waited for.
func writeTimeline(out io.Writer, t Timeline) error {
	if t.PID1 {
		fmt.Fprintf(out, "kernel %s + baton %s = %s to all services started\n\n",
			ms(t.KernelToInit), ms(t.InitToReady), ms(t.KernelToInit+t.InitToReady))
	}
	if t.Update != "" {
		fmt.Fprintf(out, "%s\n\n", t.Update)
	}
	all := append([]TimelineEntry(nil), t.Steps...)
	started := map[string]bool{} // services a boot step started: their step says it all
	for _, s := range t.Steps {
		if s.Service != "" {
			started[s.Service] = true
		}
	}
	for _, s := range t.Services {
		if !started[s.Name] {
			s.Name = "service " + s.Name
			all = append(all, s)
		}
	}
	sort.SliceStable(all, func(i, j int) bool { return all[i].At < all[j].At })
	from, to := span(all)
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "AT\tTOOK\t%-*s\tWHAT\tWAITED FOR\n", barWidth+2, ms(from)+" → "+ms(to))
	for _, e := range all {
		what := e.Name
		if e.Error != "" {
			what += "  (" + e.Error + ")"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", ms(e.At), ms(e.Took), bar(e, from, to), what, e.WaitedFor)
	}
	if len(t.Previous) > 0 {
		fmt.Fprintf(tw, "\nprevious shutdown (%s):\t\t\t\t\n", t.PreviousAction)
		if t.PreviousKexec != "" {
			fmt.Fprintf(tw, "  kernel loaded with %s\t\t\t\t\n", t.PreviousKexec)
		}
		for _, e := range t.Previous {
			fmt.Fprintf(tw, "%s\t%s\t\t%s\t\n", ms(e.At), ms(e.Took), e.Name)
		}
	}
	return tw.Flush()
}

// span is from the first entry's start to the last one's end; a service that never started
// (At 0) does not count.
func span(es []TimelineEntry) (from, to time.Duration) {
	first := true
	for _, e := range es {
		if e.At == 0 {
			continue
		}
		if first || e.At < from {
			from = e.At
		}
		if first || e.At+e.Took > to {
			to = e.At + e.Took
		}
		first = false
	}
	return from, to
}

// bar draws e's span within from…to; even an instant step gets one mark.
func bar(e TimelineEntry, from, to time.Duration) string {
	if e.At == 0 || to <= from {
		return strings.Repeat(" ", barWidth+2)
	}
	scale := float64(barWidth) / float64(to-from)
	start := int(float64(e.At-from) * scale)
	end := int(float64(e.At+e.Took-from)*scale + 0.999)
	start, end = min(start, barWidth-1), min(max(end, start+1), barWidth)
	return "|" + strings.Repeat(" ", start) + strings.Repeat("=", end-start) + strings.Repeat(" ", barWidth-end) + "|"
}
