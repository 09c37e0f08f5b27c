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
	"strings"
	"text/tabwriter"
	"time"

	"github.com/baton-init/baton/update"
)

// The update routes: GET /v1/update (status), PUT /v1/update/files/{vmlinuz|initramfs.img}
// (streamed, with ?sha256=), POST /v1/update/apply.

func (s *Server) updateRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/update", s.updateStatus)
	mux.HandleFunc("PUT /v1/update/files/{file}", s.updateFile)
	mux.HandleFunc("POST /v1/update/apply", s.updateApply)
}

func (s *Server) updater(w http.ResponseWriter) *update.Updater {
	var u *update.Updater
	if s.Update != nil {
		u = s.Update()
	}
	if u == nil {
		writeError(w, http.StatusConflict, "update: not available here (baton is not PID 1, or the appliance has no boot partition at /boot, or the boot has not mounted it yet)")
	}
	return u
}

func (s *Server) updateStatus(w http.ResponseWriter, r *http.Request) {
	if u := s.updater(w); u != nil {
		writeJSON(w, http.StatusOK, u.Status())
	}
}

func updateCode(err error) int {
	switch {
	case errors.Is(err, update.ErrBusy), errors.Is(err, update.ErrNotNow):
		return http.StatusConflict
	case errors.Is(err, update.ErrNoSpace):
		return http.StatusInsufficientStorage
	case errors.Is(err, update.ErrBadUpload):
		return http.StatusBadRequest
	case errors.Is(err, update.ErrNotConfirmed):
		return http.StatusConflict
	}
	return http.StatusInternalServerError
}

func (s *Server) updateFile(w http.ResponseWriter, r *http.Request) {
	u := s.updater(w)
	if u == nil {
		return
	}
	err := u.Receive(r.PathValue("file"), r.ContentLength, r.URL.Query().Get("sha256"), r.Body)
	if err != nil {
		writeError(w, updateCode(err), "update: "+err.Error())
		return
	}
	writeJSON(w, http.StatusOK, u.Status())
}

// UpdateApply is the answer to POST /v1/update/apply: the plan, and how it went (or, on the
// kexec path, that the new boot will tell).
type UpdateApply struct {
	update.ApplyResult
	Error string `json:"error,omitempty"`
}

func (s *Server) updateApply(w http.ResponseWriter, r *http.Request) {
	u := s.updater(w)
	if u == nil {
		return
	}
	var req update.ApplyRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil && !errors.Is(err, io.EOF) {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("update request: %v", err))
		return
	}
	res, err := u.Apply(req)
	switch {
	case err != nil && res.Record.ID == "":
		writeError(w, updateCode(err), "update: "+err.Error())
	case err != nil: // applied and undone: an outcome, with its plan and record
		writeJSON(w, http.StatusOK, UpdateApply{ApplyResult: res, Error: err.Error()})
	case res.Pending:
		writeJSON(w, http.StatusAccepted, UpdateApply{ApplyResult: res})
	default:
		writeJSON(w, http.StatusOK, UpdateApply{ApplyResult: res})
	}
}

// UpdateStatus returns the appliance's slots and last update.
func (c *Client) UpdateStatus() (update.Status, error) {
	var st update.Status
	err := c.call("GET", "/v1/update", nil, &st)
	return st, err
}

// UploadUpdateFile streams the host file at path to the appliance's inactive slot as name
// (update.KernelFile or update.InitrdFile), with its SHA-256 for the appliance to check.
func (c *Client) UploadUpdateFile(name, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	h := sha256.New()
	size, err := io.Copy(h, f)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(context.Background(), "PUT",
		c.base+"/v1/update/files/"+name+"?sha256="+hex.EncodeToString(h.Sum(nil)), f)
	if err != nil {
		return err
	}
	req.ContentLength = size
	resp, err := c.do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	return nil
}

// ApplyUpdate asks the appliance to switch to the uploaded image. A refused or rolled-back
// update is an error; the plan and record come back with a rolled-back one.
func (c *Client) ApplyUpdate(req update.ApplyRequest) (UpdateApply, error) {
	var out UpdateApply
	if err := c.call("POST", "/v1/update/apply", req, &out); err != nil {
		return out, err
	}
	if out.Error != "" {
		return out, errors.New(out.Error)
	}
	return out, nil
}

func (ic *initctl) update(args []string) error {
	fs := flag.NewFlagSet("update", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	kernel := fs.String("kernel", "", "")
	initrd := fs.String("initrd", "", "")
	cmdline := fs.String("cmdline", "", "")
	dry := fs.Bool("dry-run", false, "")
	status := fs.Bool("status", false, "")
	noWait := fs.Bool("no-wait", false, "")
	asJSON := fs.Bool("json", false, "")
	timeout := fs.Duration("timeout", 5*time.Minute, "")
	if err := fs.Parse(args); err != nil || fs.NArg() > 0 {
		return &usageError{"update --kernel FILE --initrd FILE [--cmdline ARGS] [--dry-run] [--no-wait] [--timeout D] | update --status [--json]"}
	}
	if *status {
		st, err := ic.c.UpdateStatus()
		if err != nil {
			return err
		}
		if *asJSON {
			return json.NewEncoder(ic.out).Encode(st)
		}
		return ic.printUpdateStatus(st)
	}
	if *kernel == "" || *initrd == "" {
		return &usageError{"update needs --kernel FILE and --initrd FILE (an image built by make image / mkimage)"}
	}
	// The initramfs first: it is the one most checks can refuse.
	for _, f := range []struct{ name, path string }{{update.InitrdFile, *initrd}, {update.KernelFile, *kernel}} {
		start := time.Now()
		if err := ic.c.UploadUpdateFile(f.name, f.path); err != nil {
			return fmt.Errorf("upload %s: %w", f.path, err)
		}
		fmt.Fprintf(ic.out, "uploaded %s as %s in %s\n", f.path, f.name, time.Since(start).Round(time.Millisecond))
	}
	res, err := ic.c.ApplyUpdate(update.ApplyRequest{Cmdline: *cmdline, DryRun: *dry})
	return ic.outcome(res, err, *dry, *noWait, *timeout)
}

// rollback switches to the other confirmed slot, the least disruptive way, and waits for the
// outcome as update does.
func (ic *initctl) rollback(args []string) error {
	fs := flag.NewFlagSet("rollback", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	dry := fs.Bool("dry-run", false, "")
	noWait := fs.Bool("no-wait", false, "")
	timeout := fs.Duration("timeout", 5*time.Minute, "")
	if err := fs.Parse(args); err != nil || fs.NArg() > 0 {
		return &usageError{"rollback [--dry-run] [--no-wait] [--timeout D]"}
	}
	res, err := ic.c.ApplyUpdate(update.ApplyRequest{Rollback: true, DryRun: *dry})
	return ic.outcome(res, err, *dry, *noWait, *timeout)
}

// outcome prints an apply's plan and result, and follows a kexec across the reboot.
func (ic *initctl) outcome(res UpdateApply, err error, dry, noWait bool, timeout time.Duration) error {
	if res.Plan.Path != "" {
		ic.printPlan(res.Plan)
	}
	if err != nil || dry {
		return err
	}
	if !res.Pending {
		fmt.Fprintf(ic.out, "update %s: %s (image %s, slot %s)\n", res.Record.ID, res.Record.State, res.Record.To, res.Record.Slot)
		return nil
	}
	fmt.Fprintf(ic.out, "update %s: kexec into slot %s on trial; ", res.Record.ID, res.Record.Slot)
	if noWait {
		fmt.Fprintln(ic.out, "not waiting (initctl update --status tells how it ended)")
		return nil
	}
	fmt.Fprintln(ic.out, "waiting for the new boot to confirm it")
	return ic.followUpdate(res.Record.ID, timeout)
}

// followUpdate asks the appliance, across its reboot, until the update is confirmed or rolled
// back (connection errors while it reboots are expected).
func (ic *initctl) followUpdate(id string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		time.Sleep(time.Second)
		st, err := ic.c.UpdateStatus()
		if err != nil || st.Last == nil || st.Last.ID != id {
			continue
		}
		switch st.Last.State {
		case update.StateConfirmed:
			fmt.Fprintf(ic.out, "update %s: confirmed; image %s runs from slot %s\n", id, st.RunningImage, st.RunningSlot)
			return nil
		case update.StateRolledBack:
			return fmt.Errorf("update %s to %s rolled back: %s", id, st.Last.To, st.Last.Reason)
		}
	}
	return fmt.Errorf("update %s: no outcome within %s (initctl update --status)", id, timeout)
}

func (ic *initctl) printPlan(p update.Plan) {
	fmt.Fprintf(ic.out, "plan: %s → %s: %s\n", p.From, p.To, p.Path)
	for _, w := range p.Why {
		fmt.Fprintf(ic.out, "  kexec because %s\n", w)
	}
	sv := p.Services
	for _, row := range []struct {
		what  string
		names []string
	}{{"upgrade", sv.Upgraded}, {"restart", sv.Restarted}, {"rebuild", sv.Replaced}, {"start", sv.Started},
		{"stop", sv.Stopped}, {"configure", sv.Configured}, {"keep", sv.Unchanged}} {
		if len(row.names) > 0 {
			fmt.Fprintf(ic.out, "  %s: %s\n", row.what, strings.Join(row.names, ", "))
		}
	}
}

func (ic *initctl) printUpdateStatus(st update.Status) error {
	tw := tabwriter.NewWriter(ic.out, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "running image:\t%s (slot %s)\n", st.RunningImage, orNone(st.RunningSlot))
	if st.BootedImage != st.RunningImage {
		fmt.Fprintf(tw, "booted image:\t%s (services updated in place since)\n", st.BootedImage)
	}
	for _, s := range st.Slots {
		def := ""
		if s.Default {
			def = ", firmware default"
		}
		fmt.Fprintf(tw, "slot %s:\t%s%s\t%s\t%s\t%s\n", s.Name, s.State, def, orNone(s.ImageID), strings.Join(s.KernelReleases, ","), s.Written)
	}
	if l := st.Last; l != nil {
		fmt.Fprintf(tw, "last update:\t%s %s → %s (%s, slot %s): %s\n", l.ID, orNone(l.From), l.To, l.Path, l.Slot, l.State)
		if l.Reason != "" {
			fmt.Fprintf(tw, "\treason: %s\n", l.Reason)
		}
	}
	return tw.Flush()
}

func orNone(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
