package update

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/u-root/u-root/pkg/cpio"

	"github.com/baton-init/baton/config"
	"github.com/baton-init/baton/images/imagefmt"
	"github.com/baton-init/baton/kexec"
	"github.com/baton-init/baton/services"
	"github.com/baton-init/baton/system"
)

// ErrBusy refuses a second update while one is received or applied.
var ErrBusy = errors.New("an update is already under way")

// ErrNotNow refuses an update while another change of the system (a kexec, a re-exec) is
// under way.
var ErrNotNow = errors.New("update refused")

// Updater receives and applies updates on a running appliance.
type Updater struct {
	Boot   Boot
	Log    *slog.Logger
	SV     *services.Supervisor
	RunDir string // binaries of in-place updates are extracted below RunDir/images
	// Booted is the manifest of the image the root file system was unpacked from; BootCfg the
	// config PID 1 booted with; Cmdline this boot's kernel command line.
	Booted  imagefmt.Manifest
	BootCfg *config.Config
	Cmdline system.Cmdline
	// Kexec loads kernel and initrd with cmdline and starts the shutdown that jumps into it;
	// it returns once loaded. nil outside PID 1: only in-place updates apply there.
	Kexec          func(kernel, initrd, cmdline string) error
	ConfirmTimeout time.Duration
	// Exclusive, if set, is held while an image is received, applied or confirmed on trial:
	// PID 1's one-change-at-a-time guard, which a kexec and a re-exec take too. A refusal
	// wraps ErrNotNow. Kexec is called with it held.
	Exclusive func(what string) (release func(), err error)

	busy    sync.Mutex // held while an update is received or applied
	mu      sync.Mutex // guards what follows
	running imagefmt.Manifest
	slot    string // the slot running now, "" when booted from elsewhere
}

// Record is the last update and how it went; kept on the boot partition, so the boot that
// follows a kexec (or a firmware reboot) can confirm it, roll it back or report it.
type Record struct {
	ID       string    `json:"id"`
	From     string    `json:"from"` // image ids
	To       string    `json:"to"`
	Slot     string    `json:"slot"`      // where the new image is
	PrevSlot string    `json:"prev_slot"` // the slot it came from ("" when unknown)
	Path     string    `json:"path"`      // in-place or kexec
	State    string    `json:"state"`     // applying, trial, confirmed, rolled-back
	Reason   string    `json:"reason,omitempty"`
	Started  time.Time `json:"started"`
	Ended    time.Time `json:"ended,omitzero"`
}

// Record states.
const (
	StateApplying   = "applying"
	StateTrial      = "trial"
	StateConfirmed  = "confirmed"
	StateRolledBack = "rolled-back"
)

const recordFile = "baton-update.json"

// Status is what initctl update --status shows.
type Status struct {
	RunningImage string     `json:"running_image"`
	RunningSlot  string     `json:"running_slot,omitempty"`
	BootedImage  string     `json:"booted_image"` // the root file system's (differs after an in-place update)
	Slots        []SlotInfo `json:"slots"`
	Last         *Record    `json:"last,omitempty"`
	Busy         bool       `json:"busy"`
}

// Init is called once at boot: it learns which slot runs, and settles what the last update
// left behind (a trial the firmware gave up on).
func (u *Updater) Init() {
	u.mu.Lock()
	u.running = u.Booted
	slotArg, _ := u.Cmdline.Get("baton.slot")
	u.slot = u.Boot.Running(slotArg, u.Booted.ImageID)
	u.mu.Unlock()
	rec, err := u.record()
	if err != nil || rec.State != StateTrial {
		return
	}
	if trial, _ := u.Cmdline.Get("baton.trial"); trial == rec.ID {
		return // this is the trial boot: ConfirmTrial decides once the services are up
	}
	// A trial whose boot never confirmed it and whose id is not ours: the new kernel panicked
	// or hung, and the firmware (or a rollback kexec) brought the confirmed slot back.
	rec.State, rec.Ended = StateRolledBack, time.Now()
	if rec.Reason == "" {
		rec.Reason = "the new image's boot did not confirm it (kernel panic, hang or power loss); the confirmed slot booted instead"
	}
	_ = u.Boot.Discard(rec.Slot)
	u.saveRecord(rec)
	u.Log.Error("update rolled back", "to", rec.To, "reason", rec.Reason, system.KmsgKey, true)
}

// Status reports both slots, the running image and the last update.
func (u *Updater) Status() Status {
	u.mu.Lock()
	st := Status{RunningImage: u.running.ImageID, RunningSlot: u.slot, BootedImage: u.Booted.ImageID}
	u.mu.Unlock()
	st.Slots = u.Boot.Slots()
	if rec, err := u.record(); err == nil {
		st.Last = &rec
	}
	if u.busy.TryLock() {
		u.busy.Unlock()
	} else {
		st.Busy = true
	}
	return st
}

// target is the slot an update is written to: never the running one, never the default.
func (u *Updater) target() (string, error) {
	u.mu.Lock()
	running := u.slot
	u.mu.Unlock()
	def := u.Boot.Default()
	switch {
	case running != "":
		if Other(running) == def {
			return "", fmt.Errorf("the firmware's default is slot %s, not the running slot %s: confirm or roll back first", def, running)
		}
		return Other(running), nil
	case def != "":
		return Other(def), nil
	}
	return "b", nil
}

// Receive writes one file of the next image (KernelFile or InitrdFile) into the inactive slot.
func (u *Updater) Receive(file string, size int64, sha string, body io.Reader) error {
	if !u.busy.TryLock() {
		return ErrBusy
	}
	defer u.busy.Unlock()
	release, err := u.exclusive()
	if err != nil {
		return err
	}
	defer release()
	slot, err := u.target()
	if err != nil {
		return err
	}
	m, cfg, err := u.Boot.receive(slot, file, size, sha, body, u.trusted())
	if err != nil {
		u.Log.Error("update: upload refused", "file", file, "slot", slot, "err", err)
		return err
	}
	if cfg != nil { // read with the manifest: applying it will not decompress the archive for it
		if err := writeExtracted(u.stagedConfig(m.ImageID), bytes.NewReader(cfg), 0o644); err != nil {
			return err
		}
	}
	u.Log.Info("update: received", "file", file, "slot", slot, "bytes", size, "image", m.ImageID)
	return nil
}

// trusted are the keys new images must be signed by (none: any image the API is given).
func (u *Updater) trusted() []string {
	if u.BootCfg == nil {
		return nil
	}
	return u.BootCfg.Update.TrustedKeys
}

// stagedConfig is where the config of image id is kept once received.
func (u *Updater) stagedConfig(id string) string {
	return filepath.Join(u.RunDir, "images", id, "baton.toml")
}

func (u *Updater) record() (Record, error) {
	var r Record
	data, err := os.ReadFile(filepath.Join(u.Boot.Dir, recordFile))
	if err != nil {
		return r, err
	}
	return r, json.Unmarshal(data, &r)
}

func (u *Updater) saveRecord(r Record) {
	data, _ := json.MarshalIndent(r, "", " ")
	if err := writeFileSynced(filepath.Join(u.Boot.Dir, recordFile), data); err != nil {
		u.Log.Error("update: record not saved", "err", err)
	}
}

func newID() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// extract copies the named files out of the initramfs at path: image path → destination.
func extract(path string, want map[string]string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	left := len(want)
	var ferr error
	err = imagefmt.ReadInitramfs(f, func(name string, info cpio.Info, body io.Reader) bool {
		dst, ok := want[name]
		if !ok {
			return true
		}
		if ferr = writeExtracted(dst, body, os.FileMode(info.Mode&0o777)); ferr != nil {
			return false
		}
		left--
		return left > 0
	})
	if err == nil {
		err = ferr
	}
	if err == nil && left > 0 {
		err = fmt.Errorf("%d file(s) not found in %s", left, path)
	}
	return err
}

func writeExtracted(dst string, body io.Reader, mode os.FileMode) error {
	if st, err := os.Stat(dst); err == nil && st.Mode().IsRegular() {
		return nil // named by its digest: already there is the same file
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	tmp := dst + ".part"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode|0o400)
	if err != nil {
		return err
	}
	_, err = io.Copy(f, body)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, dst)
}

// nextCmdline is the command line a slot boots with: this boot's, without what belonged to
// this boot only — kexec's one-shot parameters (kexec.Reuse: the boot loader's, baton.prev,
// the fast method's memmap= of the old code's holes with its baton.spared=) and the update's
// own.
func (u *Updater) nextCmdline(extra ...string) string {
	var keep []string
	for _, p := range kexec.Reuse(u.Cmdline.Params()) {
		switch k, _, _ := strings.Cut(p, "="); k {
		case "baton.slot", "baton.trial", "baton.rolledback", "panic":
			continue
		}
		keep = append(keep, p)
	}
	return kexec.Join(append(keep, extra...))
}

// exclusive takes Exclusive, if set.
func (u *Updater) exclusive() (release func(), err error) {
	if u.Exclusive == nil {
		return func() {}, nil
	}
	return u.Exclusive("an update")
}
