package main

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/baton-init/baton/control"
	"github.com/baton-init/baton/kexec"
	"github.com/baton-init/baton/system"
)

// pendingKexec is a loaded kernel waiting for the shutdown to end.
type pendingKexec struct {
	img        kexec.Image
	method     kexec.Method
	note       string // how it was loaded (method, fallback, KASLR), for the next boot's analyze
	retryAfter bool   // the load failed with ENOMEM: load again once services are stopped
}

// kexecRequest is initctl kexec: it holds the change guard from the request until the
// shutdown is pending (from then on a re-exec or update is refused because of the shutdown),
// so no re-exec or update starts while the kernel is loaded, nor a kexec while they run.
func (m *machine) kexecRequest(req control.KexecRequest) (control.KexecResult, error) {
	release, err := m.change.take("a kexec")
	if err != nil {
		var busy *changeBusy
		if errors.As(err, &busy) && busy.holder == "a kexec" {
			// The kernel allows one load at a time and answers a second with a bare EBUSY
			// ("another kexec load or a crash kernel operation is in progress").
			return control.KexecResult{}, errKexecBusy
		}
		return control.KexecResult{}, fmt.Errorf("kexec refused: %w", err)
	}
	defer release()
	return m.loadAndJump(req)
}

// loadAndJump loads the kernel while everything still runs — a refused load costs no
// downtime and its error goes back to the caller — then asks the main loop to shut down and
// jump. Only ENOMEM is retried, after the services have freed their memory. The caller holds
// the change guard (initctl kexec, or an update applying or rolling back).
func (m *machine) loadAndJump(req control.KexecRequest) (control.KexecResult, error) {
	m.log.Info("kexec requested", "kernel", req.Kernel, "method", req.Method, "load_only", req.LoadOnly, "unload", req.Unload)
	if req.Unload {
		if err := kexec.Unload(); err != nil {
			return control.KexecResult{}, err
		}
		return control.KexecResult{Note: "unloaded" + loadedNote()}, nil
	}
	var def struct{ kernel, initrd, cmdline, append, method, spare string }
	if m.cfg != nil {
		def.kernel, def.initrd, def.cmdline, def.append = m.cfg.Kexec.Kernel, m.cfg.Kexec.Initrd, m.cfg.Kexec.Cmdline, m.cfg.Kexec.Append
		def.method, def.spare = m.cfg.Kexec.Method, m.cfg.Kexec.SpareOldCode
	}
	method, err := kexec.ParseMethod(first(req.Method, def.method))
	if err != nil {
		return control.KexecResult{}, err
	}
	img := kexec.Image{Kernel: first(req.Kernel, def.kernel), Initrd: first(req.Initrd, def.initrd),
		SpareOldCode: def.spare == "yes" || (def.spare == "auto" || def.spare == "") && kexec.UnderTCG()}
	if img.Kernel == "" || img.Initrd == "" {
		// Neither says: the slot this boot came from (its kernel, its image).
		kernel, initrd, err := m.runningSlotFiles()
		if img.Kernel == "" && err != nil {
			return control.KexecResult{}, fmt.Errorf("kexec: no kernel: give --kernel PATH or set [kexec] kernel in the config (%v)", err)
		}
		img.Kernel, img.Initrd = first(img.Kernel, kernel), first(img.Initrd, initrd)
	}
	var params []string
	switch {
	case req.Cmdline != "":
		// Split as the kernel would (quotes kept together), so Join quotes each as needed.
		params = system.ParseCmdline(req.Cmdline).Params()
	case req.ReuseCmdline || def.cmdline == "reuse" || def.cmdline == "":
		params = kexec.Reuse(m.cmdline.Params())
	default:
		params = []string{def.cmdline}
	}
	for _, a := range []string{def.append, req.Append} {
		if a != "" {
			params = append(params, a)
		}
	}
	// Marks the next boot as this kexec's, so it takes the shutdown timeline written to /boot.
	params = append(params, "baton.prev="+m.shutdownID())
	img.Cmdline = kexec.Join(params)

	start := time.Now()
	lr, err := loadKernel(img, method)
	res := control.KexecResult{Kernel: img.Kernel, Initrd: img.Initrd, Cmdline: img.Cmdline, LoadMs: time.Since(start).Milliseconds(),
		Method: string(lr.Method), Fallback: lr.Fallback}
	if lr.Fast != nil {
		res.KASLR = lr.Fast.KASLR
	}
	retry := false
	if err != nil {
		if !errors.Is(err, unix.ENOMEM) || req.LoadOnly {
			m.log.Error("kexec load refused; nothing stopped", "kernel", img.Kernel, "err", err)
			return res, err
		}
		retry = true
		res.Note = "load failed for lack of memory; retrying once the services are stopped"
	} else {
		res.Loaded = true
	}
	if lr.Fallback != "" {
		m.log.Warn("kexec: the fast method was refused; loaded with kexec_file_load", "reason", lr.Fallback, system.KmsgKey, true)
	}
	m.log.Info("kexec kernel loaded", "kernel", img.Kernel, "initrd", img.Initrd, "cmdline", img.Cmdline,
		"how", lr.Note(), "took", time.Since(start), system.KmsgKey, true)
	if req.LoadOnly {
		res.Note = "not jumping; initctl kexec jumps later" + loadedNote()
		return res, nil
	}
	if err := m.requestPower("control API", system.Kexec, &pendingKexec{img: img, method: lr.Method, note: lr.Note(), retryAfter: retry}); err != nil {
		return res, fmt.Errorf("kexec: %w", err)
	}
	res.Jumping = true
	return res, nil
}

// loadKernel is kexec.LoadWith, a variable so a test can hold a load in progress.
var (
	loadKernel   = kexec.LoadWith
	errKexecBusy = errors.New("kexec: a kexec is already in progress (a kernel is being loaded); wait for it to finish")
)

// loadedNote says what the kernel reports, so a caller can trust a load or an unload.
func loadedNote() string {
	loaded, err := kexec.Loaded()
	if err != nil {
		return ""
	}
	return fmt.Sprintf(" (/sys/kernel/kexec_loaded: %v)", loaded)
}

func first(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// shutdownID is a random token for this boot's shutdown, so the next boot knows a timeline
// file is about the shutdown that led to it.
func (m *machine) shutdownID() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.shutID == "" {
		b := make([]byte, 6)
		_, _ = rand.Read(b)
		m.shutID = hex.EncodeToString(b)
	}
	return m.shutID
}

// The previous shutdown's timeline travels in a file on /boot: a kexec's command line is fixed
// when the kernel is loaded, before the shutdown it would describe has happened.
const lastShutdownFile = "/boot/baton-last-shutdown.json"

type shutdownRecord struct {
	ID     string                  `json:"id"`
	Action string                  `json:"action"`
	Steps  []control.TimelineEntry `json:"steps"`
	Kexec  string                  `json:"kexec,omitempty"` // how the next kernel was loaded
}

// saveShutdown writes the shutdown steps so far to /boot, when /boot is a writable mount.
func (m *machine) saveShutdown(action system.PowerAction, steps []timing) {
	var st unix.Statfs_t
	if err := unix.Statfs("/boot", &st); err != nil || st.Flags&unix.ST_RDONLY != 0 || !isMountPoint("/boot") {
		return
	}
	rec := shutdownRecord{ID: m.shutdownID(), Action: action.String(), Steps: stepTimeline(steps)}
	m.mu.Lock()
	if m.kexec != nil && action == system.Kexec {
		rec.Kexec = m.kexec.note
	}
	m.mu.Unlock()
	data, _ := json.Marshal(rec)
	f, err := os.Create(lastShutdownFile)
	if err != nil {
		m.log.Debug("cannot record the shutdown timeline", "err", err)
		return
	}
	// No fsync: the unmount that follows writes it out with the rest (shutdown syncs again
	// if /boot stays mounted). Its own fsync on the FAT took ~40 ms of a kexec's downtime
	// under TCG.
	_, err = f.Write(data)
	err = errors.Join(err, f.Close())
	if err != nil {
		m.log.Debug("cannot record the shutdown timeline", "err", err)
	}
}

// loadPreviousShutdown reads (once) what the previous shutdown recorded on /boot. After a kexec
// the command line names the shutdown; a file about another one is stale and ignored.
func (m *machine) loadPreviousShutdown() {
	data, err := os.ReadFile(lastShutdownFile)
	if err != nil {
		return
	}
	_ = os.Remove(lastShutdownFile)
	var rec shutdownRecord
	if json.Unmarshal(data, &rec) != nil {
		return
	}
	if id, ok := m.cmdline.Get("baton.prev"); ok && id != rec.ID {
		return
	}
	m.mu.Lock()
	m.previous, m.previousAction, m.previousKexec = rec.Steps, rec.Action, rec.Kexec
	m.mu.Unlock()
	var total time.Duration
	for _, s := range rec.Steps {
		total += s.Took
	}
	m.log.Info("previous shutdown", "action", rec.Action, "took", total.Round(time.Millisecond))
}

func isMountPoint(path string) bool {
	data, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		return false
	}
	for _, l := range strings.Split(string(data), "\n") {
		if f := strings.Fields(l); len(f) > 1 && f[1] == path {
			return true
		}
	}
	return false
}

// jump loads again if needed and executes the loaded kernel. It returns only on failure.
func (m *machine) jump() error {
	m.mu.Lock()
	p := m.kexec
	m.mu.Unlock()
	if p == nil {
		return fmt.Errorf("kexec: no kernel loaded")
	}
	if p.retryAfter {
		if _, err := kexec.LoadWith(p.img, p.method); err != nil {
			return fmt.Errorf("kexec: load after stopping services: %w", err)
		}
	}
	return kexec.Exec()
}
