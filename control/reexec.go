package control

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"
)

// The re-exec routes: POST /v1/reexec (body: the new binary, streamed, with ?sha256=; empty
// body: the running binary again) and GET /v1/version (also /v1/reexec: the same answer,
// which says how the last re-exec ended).

// VersionInfo is GET /v1/version: the binary running as baton now.
type VersionInfo struct {
	Version      string        `json:"version"`
	Digest       string        `json:"digest"` // SHA-256 of the running binary
	Pid          int           `json:"pid"`
	Mode         string        `json:"mode"`    // pid1 | subreaper
	Started      time.Time     `json:"started"` // this process image
	StateVersion uint32        `json:"state_version"`
	Reexecs      int           `json:"reexecs"` // since baton started (across its images)
	Last         *ReexecStatus `json:"last_reexec,omitempty"`
}

// ReexecStatus is how a re-exec went.
type ReexecStatus struct {
	ID    string `json:"id"`
	State string `json:"state"` // running | done | failed
	Error string `json:"error,omitempty"`
	From  string `json:"from,omitempty"` // digest of the binary before
	To    string `json:"to,omitempty"`   // digest of the binary asked for
	// PauseMs: the services' loops frozen in the old image → running in the new one.
	PauseMs float64   `json:"pause_ms,omitempty"`
	At      time.Time `json:"at"`
}

// ReexecStarted is the answer to POST /v1/reexec (202): the execve follows.
type ReexecStarted struct {
	ID string `json:"id"`
	To string `json:"to"` // digest of the binary that is executed
}

// Reexecer is what the server needs from init for the re-exec routes; nil: not available.
type Reexecer interface {
	Version() VersionInfo
	// Prepare checks the binary (nil: the running one), runs its trial and, if all is well,
	// returns the re-exec's id and commit, which freezes, serializes and executes it; commit
	// returns only if it could not (recorded in Version().Last).
	Prepare(binary io.Reader, sha256 string) (ReexecStarted, func(), error)
}

// Errors of Prepare, for the answer's code.
var (
	ErrReexecBusy = errors.New("busy")       // 409: an upgrade, update, kexec or re-exec under way
	ErrBadBinary  = errors.New("bad binary") // 400: not a static executable, digest mismatch
)

// MaxBinary bounds an uploaded binary.
const MaxBinary = 512 << 20

func (s *Server) reexecRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/version", s.version)
	mux.HandleFunc("GET /v1/reexec", s.version)
	mux.HandleFunc("POST /v1/reexec", s.reexec)
}

func (s *Server) version(w http.ResponseWriter, r *http.Request) {
	if s.Reexec == nil {
		writeError(w, http.StatusNotFound, "version: not available")
		return
	}
	writeJSON(w, http.StatusOK, s.Reexec.Version())
}

func (s *Server) reexec(w http.ResponseWriter, r *http.Request) {
	if s.Reexec == nil {
		writeError(w, http.StatusConflict, "reexec: not available here")
		return
	}
	var body io.Reader
	if r.ContentLength != 0 {
		if r.ContentLength > MaxBinary {
			writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("reexec: a binary of %d bytes (at most %d)", r.ContentLength, MaxBinary))
			return
		}
		body = http.MaxBytesReader(w, r.Body, MaxBinary)
	}
	sum := r.URL.Query().Get("sha256")
	if body != nil && sum == "" {
		writeError(w, http.StatusBadRequest, "reexec: an uploaded binary needs ?sha256=")
		return
	}
	start := time.Now()
	started, commit, err := s.Reexec.Prepare(body, sum)
	if err != nil {
		code := http.StatusInternalServerError
		switch {
		case errors.Is(err, ErrReexecBusy):
			code = http.StatusConflict
		case errors.Is(err, ErrBadBinary):
			code = http.StatusBadRequest
		}
		s.Log.Error("control: reexec refused", "err", err)
		writeError(w, code, "reexec: "+err.Error())
		return
	}
	s.Log.Info("control: reexec", "id", started.ID, "to", started.To, "trial_took", time.Since(start).Round(time.Millisecond))
	// The answer must be out before the execve: the connection does not survive it.
	w.Header().Set("Connection", "close")
	writeJSON(w, http.StatusAccepted, started)
	if f, ok := w.(http.Flusher); ok {
		f.Flush()
	}
	commit()
}

// Version asks which binary runs.
func (c *Client) Version() (VersionInfo, error) {
	var v VersionInfo
	err := c.call("GET", "/v1/version", nil, &v)
	return v, err
}

// Reexec asks baton to execute a new version of itself: path "" for the running binary, else
// the host file at path, streamed with its SHA-256. It returns once the trial passed and the
// execve is under way; ReexecWait tells how it ended.
func (c *Client) Reexec(path string) (ReexecStarted, error) {
	var out ReexecStarted
	if path == "" {
		err := c.call("POST", "/v1/reexec", nil, &out)
		return out, err
	}
	f, err := os.Open(path)
	if err != nil {
		return out, err
	}
	defer f.Close()
	h := sha256.New()
	size, err := io.Copy(h, f)
	if err != nil {
		return out, fmt.Errorf("%s: %w", path, err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return out, err
	}
	req, err := http.NewRequestWithContext(context.Background(), "POST", c.base+"/v1/reexec?sha256="+hex.EncodeToString(h.Sum(nil)), f)
	if err != nil {
		return out, err
	}
	req.ContentLength = size
	resp, err := c.do(req)
	if err != nil {
		return out, err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return out, fmt.Errorf("POST /v1/reexec: bad answer: %w", err)
	}
	return out, nil
}

// ReexecWait asks, across the execve, until the re-exec id has an outcome: the new binary
// answering (nil), or the reason it failed (the old or the restored previous binary answers).
func (c *Client) ReexecWait(id string, timeout time.Duration) (VersionInfo, error) {
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		v, err := c.Version()
		if err != nil {
			last = err
			time.Sleep(50 * time.Millisecond)
			continue
		}
		if l := v.Last; l != nil && l.ID == id && l.State != "running" {
			if l.State == "failed" {
				return v, fmt.Errorf("reexec %s failed: %s (pid %d runs %s)", id, l.Error, v.Pid, short(v.Digest))
			}
			return v, nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return VersionInfo{}, fmt.Errorf("reexec %s: no outcome within %s (last error: %v)", id, timeout, last)
}

func short(digest string) string {
	if len(digest) > 12 {
		return digest[:12]
	}
	return digest
}

// initctl reexec [--binary FILE] [--timeout D], initctl version.
func (ic *initctl) reexecCommands() map[string]func([]string) error {
	return map[string]func([]string) error{"reexec": ic.reexec, "version": ic.version}
}

func (ic *initctl) reexec(args []string) error {
	fs := flag.NewFlagSet("reexec", flag.ContinueOnError)
	binary := fs.String("binary", "", "")
	timeout := fs.Duration("timeout", time.Minute, "")
	if rest, err := parse(fs, args); err != nil || len(rest) > 0 {
		return &usageError{"reexec takes only flags: [--binary FILE] [--timeout D]"}
	}
	start := time.Now()
	st, err := ic.c.Reexec(*binary)
	if err != nil {
		return err
	}
	fmt.Fprintf(ic.out, "reexec %s: trial passed; executing %s\n", st.ID, short(st.To))
	v, err := ic.c.ReexecWait(st.ID, *timeout)
	if err != nil {
		return err
	}
	fmt.Fprintf(ic.out, "reexec %s: done in %s: pid %d runs %s (%s), services kept; paused %.1fms\n",
		st.ID, time.Since(start).Round(time.Millisecond), v.Pid, v.Version, short(v.Digest), v.Last.PauseMs)
	return nil
}

func (ic *initctl) version(args []string) error {
	if len(args) > 0 {
		return &usageError{"version takes no arguments"}
	}
	v, err := ic.c.Version()
	if err != nil {
		return err
	}
	fmt.Fprintf(ic.out, "baton %s (%s), pid %d, %s mode\nsha256 %s\nstarted %s, re-executed %d times, state format %d\n",
		v.Version, short(v.Digest), v.Pid, v.Mode, v.Digest, v.Started.Format(time.RFC3339), v.Reexecs, v.StateVersion)
	if l := v.Last; l != nil {
		fmt.Fprintf(ic.out, "last reexec %s: %s", l.ID, l.State)
		if l.Error != "" {
			fmt.Fprintf(ic.out, " (%s)", l.Error)
		}
		if l.PauseMs > 0 {
			fmt.Fprintf(ic.out, ", paused %.1fms", l.PauseMs)
		}
		fmt.Fprintln(ic.out)
	}
	return nil
}
