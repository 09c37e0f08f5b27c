package control

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/baton-init/baton/services"
)

// Logs across services (initctl logs with no name, -u NAME…, --since): the lines each
// service's ring keeps, tagged with the service and merged by time.

// ServiceLogLine is a log line with the service it came from.
type ServiceLogLine struct {
	Service string `json:"service"`
	services.LogLine
}

// statusRoutes are the routes of initctl status's full view and of merged logs.
func (s *Server) statusRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/logs", s.mergedLogs)
	mux.HandleFunc("GET /v1/services/{name}/processes", s.processes)
}

// mergedLogs is GET /v1/logs?u=NAME&u=…&since=WHEN&n=N: the last n lines (0: all kept) of the
// services named (default: all), at or after since, oldest first.
func (s *Server) mergedLogs(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	n := 0
	if v := q.Get("n"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 0 {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("n=%q: want a number of lines ≥ 0 (0: all kept)", v))
			return
		}
	}
	var since time.Time
	if v := q.Get("since"); v != "" {
		var err error
		if since, err = ParseSince(v, time.Now()); err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
	}
	names := q["u"]
	if len(names) == 0 {
		for _, st := range s.SV.Statuses() {
			names = append(names, st.Name)
		}
	}
	var out []ServiceLogLine
	for _, name := range names {
		svc := s.SV.Service(name)
		if svc == nil {
			writeError(w, http.StatusNotFound, fmt.Sprintf("unknown service %q", name))
			return
		}
		for _, l := range svc.Logs.Tail(0) {
			if !l.Time.Before(since) {
				out = append(out, ServiceLogLine{Service: name, LogLine: l})
			}
		}
	}
	out = MergeLogs(out)
	if n > 0 && len(out) > n {
		out = out[len(out)-n:]
	}
	if out == nil {
		out = []ServiceLogLine{}
	}
	writeJSON(w, http.StatusOK, out)
}

// MergeLogs orders lines by time; lines of one service with the same time keep their order.
func MergeLogs(lines []ServiceLogLine) []ServiceLogLine {
	slices.SortStableFunc(lines, func(a, b ServiceLogLine) int { return a.Time.Compare(b.Time) })
	return lines
}

// ParseSince reads --since as journalctl users write it: an RFC 3339 time, "2006-01-02
// 15:04:05", "2006-01-02", "15:04:05" or "15:04" (today), "today", "yesterday", or a duration
// ago ("10m", "-1h", "1h ago"). Times without a zone are local to baton.
func ParseSince(v string, now time.Time) (time.Time, error) {
	s := strings.TrimSpace(v)
	switch s {
	case "now":
		return now, nil
	case "today":
		y, m, d := now.Date()
		return time.Date(y, m, d, 0, 0, 0, 0, now.Location()), nil
	case "yesterday":
		y, m, d := now.AddDate(0, 0, -1).Date()
		return time.Date(y, m, d, 0, 0, 0, 0, now.Location()), nil
	}
	if d, err := time.ParseDuration(strings.TrimPrefix(strings.TrimSpace(strings.TrimSuffix(s, "ago")), "-")); err == nil {
		return now.Add(-d), nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	for _, layout := range []string{"2006-01-02 15:04:05", "2006-01-02 15:04", "2006-01-02"} {
		if t, err := time.ParseInLocation(layout, s, now.Location()); err == nil {
			return t, nil
		}
	}
	for _, layout := range []string{"15:04:05", "15:04"} {
		if t, err := time.ParseInLocation(layout, s, now.Location()); err == nil {
			y, m, d := now.Date()
			return time.Date(y, m, d, t.Hour(), t.Minute(), t.Second(), 0, now.Location()), nil
		}
	}
	return time.Time{}, fmt.Errorf("since=%q: want a time (2006-01-02 15:04:05, 15:04, RFC 3339, today, yesterday) or a duration ago (10m, 1h ago)", v)
}

// processes is GET /v1/services/{name}/processes: its command line, memory and process tree.
func (s *Server) processes(w http.ResponseWriter, r *http.Request) {
	svc := s.service(w, r)
	if svc == nil {
		return
	}
	writeJSON(w, http.StatusOK, svc.Processes())
}

// MergedLogs returns the last n lines (0: all kept) of the services named (none: all),
// at or after since ("" for no bound), merged by time.
func (c *Client) MergedLogs(names []string, since string, n int) ([]ServiceLogLine, error) {
	q := url.Values{"n": {strconv.Itoa(n)}}
	for _, name := range names {
		q.Add("u", name)
	}
	if since != "" {
		q.Set("since", since)
	}
	var l []ServiceLogLine
	err := c.call("GET", "/v1/logs?"+q.Encode(), nil, &l)
	return l, err
}

// Processes returns a service's command line, memory and process tree.
func (c *Client) Processes(name string) (services.Processes, error) {
	var p services.Processes
	err := c.call("GET", "/v1/services/"+url.PathEscape(name)+"/processes", nil, &p)
	return p, err
}
