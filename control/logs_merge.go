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
	"github.com/baton-init/baton/system"
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

// mergedLogs is GET /v1/logs?u=NAME&u=…&since=WHEN&n=N[&boot=-1|&kernel=1]: the last n lines
// (0: all kept) of the services named (default: all), at or after since, oldest first: kept in
// memory, or of an earlier boot from the journal, or the kernel's ring buffer.
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
	var out []ServiceLogLine
	switch boot, kernel := q.Get("boot"), q.Get("kernel"); {
	case kernel == "1":
		lines, err := system.ReadKmsg()
		if lines == nil && err != nil {
			writeError(w, http.StatusConflict, err.Error())
			return
		}
		for _, l := range lines {
			if !l.Time.Before(since) {
				out = append(out, ServiceLogLine{Service: "kernel", LogLine: services.LogLine{Time: l.Time, Stream: "kernel", Text: l.Text}})
			}
		}
	case boot != "" && boot != "0":
		b, err := strconv.Atoi(boot)
		if err != nil || b > 0 {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("boot=%q: want 0 (this boot), -1 (the one before), …", boot))
			return
		}
		j := s.SV.Journal()
		if j == nil {
			writeError(w, http.StatusConflict, "no persistent journal ([log] dir is not set): only this boot's lines are kept, in memory")
			return
		}
		byService, err := services.ReadJournal(j.Dir(), b, names)
		if err != nil {
			writeError(w, http.StatusConflict, err.Error())
			return
		}
		for name, lines := range byService {
			for _, l := range lines {
				if !l.Time.Before(since) {
					out = append(out, ServiceLogLine{Service: name, LogLine: services.LogLine{Time: l.Time, Stream: l.Stream, Text: l.Text}})
				}
			}
		}
	default:
		var ok bool
		if out, ok = s.ringLines(w, names, since); !ok {
			return
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

// ringLines are the lines each named service (none: all) keeps in memory, at or after since.
func (s *Server) ringLines(w http.ResponseWriter, names []string, since time.Time) ([]ServiceLogLine, bool) {
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
			return nil, false
		}
		for _, l := range svc.Logs.Tail(0) {
			if !l.Time.Before(since) {
				out = append(out, ServiceLogLine{Service: name, LogLine: l})
			}
		}
	}
	return out, true
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

// LogQuery selects lines for MergedLogs.
type LogQuery struct {
	Names  []string // none: all
	Since  string   // "" for no bound (ParseSince's forms)
	N      int      // the last N (0: all)
	Boot   int      // 0: this boot, in memory; -1: the boot before, from the journal; …
	Kernel bool     // the kernel's ring buffer instead of services
}

// MergedLogs returns the lines q selects, merged by time.
func (c *Client) MergedLogs(lq LogQuery) ([]ServiceLogLine, error) {
	names, since, n := lq.Names, lq.Since, lq.N
	q := url.Values{"n": {strconv.Itoa(n)}}
	if lq.Boot != 0 {
		q.Set("boot", strconv.Itoa(lq.Boot))
	}
	if lq.Kernel {
		q.Set("kernel", "1")
	}
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
