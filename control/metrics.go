package control

import (
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/baton-init/baton/services"
)

// GET /metrics: the services in Prometheus' text exposition format (version 0.0.4), written
// directly — a handful of gauges and counters do not need a client library in PID 1.

var metricStates = []services.State{services.Stopped, services.Starting, services.Running,
	services.Reloading, services.Stopping, services.Failed}

func (s *Server) metrics(w http.ResponseWriter, r *http.Request) {
	var b strings.Builder
	sts := s.SV.Statuses()
	family := func(name, typ, help string, value func(st services.Status) (float64, bool)) {
		fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, typ)
		for _, st := range sts {
			if v, ok := value(st); ok {
				fmt.Fprintf(&b, "%s{service=\"%s\"} %g\n", name, labelValue(st.Name), v)
			}
		}
	}
	b.WriteString("# HELP baton_service_state 1 for the state the service is in, 0 for the others.\n# TYPE baton_service_state gauge\n")
	for _, st := range sts {
		for _, state := range metricStates {
			v := 0
			if st.State == state {
				v = 1
			}
			fmt.Fprintf(&b, "baton_service_state{service=\"%s\",state=\"%s\"} %d\n", labelValue(st.Name), state, v)
		}
	}
	family("baton_service_restarts_total", "counter", "Restarts by the restart policy since baton started.",
		func(st services.Status) (float64, bool) { return float64(st.Restarts), true })
	family("baton_service_upgrades_total", "counter", "Upgrades that succeeded.",
		func(st services.Status) (float64, bool) { return float64(st.Upgrades), true })
	family("baton_service_notify_dropped_total", "counter", "Notify datagrams dropped: not from the service's processes.",
		func(st services.Status) (float64, bool) { return float64(st.NotifyDropped), true })
	family("baton_service_notify_late_total", "counter", "Notify datagrams from a generation that was ending.",
		func(st services.Status) (float64, bool) { return float64(st.NotifyLate), true })
	family("baton_service_fdstore_fds", "gauge", "Fds held in the service's fd store.",
		func(st services.Status) (float64, bool) { return float64(len(st.Stored)), true })
	family("baton_service_fdstore_max", "gauge", "The service's fdstore_max.",
		func(st services.Status) (float64, bool) {
			if svc := s.SV.Service(st.Name); svc != nil {
				return float64(svc.Spec().FDStoreMax), true
			}
			return 0, false
		})
	family("baton_service_uptime_seconds", "gauge", "Time since the main process started; absent when none runs.",
		func(st services.Status) (float64, bool) {
			return time.Since(st.Since).Seconds(), st.Pid != 0 && !st.Since.IsZero()
		})
	family("baton_service_ready_seconds", "gauge", "First start to first ready this boot.",
		func(st services.Status) (float64, bool) {
			return st.ReadyAt.Sub(st.StartedAt).Seconds(), !st.ReadyAt.IsZero() && !st.StartedAt.IsZero()
		})
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	_, _ = w.Write([]byte(b.String()))
}

// labelValue escapes a label value as the text format requires: \\, \" and \n.
func labelValue(s string) string {
	return strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace(s)
}
