package update

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/baton-init/baton/config"
	"github.com/baton-init/baton/images/imagefmt"
	"github.com/baton-init/baton/services"
	"github.com/baton-init/baton/system"
)

// ApplyRequest is POST /v1/update/apply.
type ApplyRequest struct {
	Cmdline string `json:"cmdline,omitempty"` // the new slot's kernel command line (default: this boot's)
	DryRun  bool   `json:"dry_run,omitempty"`
	// Rollback switches to the other confirmed slot (initctl rollback) instead of an upload.
	Rollback bool `json:"rollback,omitempty"`
}

// ApplyResult says what was planned and, unless pending, how it ended.
type ApplyResult struct {
	Plan    Plan   `json:"plan"`
	Record  Record `json:"record"`
	Pending bool   `json:"pending"` // the kexec path: the outcome comes with the new boot
}

// ErrNotConfirmed is an update that was applied, not confirmed, and undone.
var ErrNotConfirmed = errors.New("update not confirmed; rolled back")

// Apply plans the switch to the image in the inactive slot and carries it out: in place (the
// changed services upgraded over their held sockets, then confirmed or undone), or by kexec
// into the slot on trial (confirmed or undone by the boot that follows).
func (u *Updater) Apply(req ApplyRequest) (ApplyResult, error) {
	var res ApplyResult
	if !u.busy.TryLock() {
		return res, ErrBusy
	}
	defer u.busy.Unlock()
	release, err := u.exclusive()
	if err != nil {
		return res, err
	}
	defer release()
	slot, err := u.target()
	if req.Rollback {
		slot, err = u.rollbackSlot()
	}
	if err != nil {
		return res, err
	}
	kernel, initrd := u.Boot.SlotFile(slot, KernelFile), u.Boot.SlotFile(slot, InitrdFile)
	for _, f := range []string{kernel, initrd} {
		if _, err := os.Stat(f); err != nil {
			return res, fmt.Errorf("%w: slot %s has no %s: upload the kernel and the initrd first (%v)", ErrBadUpload, slot, filepath.Base(f), err)
		}
	}
	// Written when the initramfs was received and checked; read from it again only if not.
	next, err := u.Boot.Manifest(slot)
	if err != nil {
		if next, err = readManifestFile(initrd); err != nil {
			return res, fmt.Errorf("%w: %v", ErrBadUpload, err)
		}
	}
	work := filepath.Join(u.RunDir, "images")
	nextCfg, err := u.loadConfigOf(initrd, next.ImageID)
	if err != nil {
		return res, err
	}
	nextKernel, err := fileDigest(kernel)
	if err != nil {
		return res, err
	}
	if len(u.trusted()) > 0 && next.Kernel != nextKernel {
		// The signature covers the manifest, which names the kernel the image was built for.
		return res, fmt.Errorf("%w: the kernel uploaded (%s) is not the one the signed manifest names (%s)", ErrBadUpload, short(nextKernel), short(next.Kernel))
	}
	u.mu.Lock()
	run, prevSlot := u.running, u.slot
	u.mu.Unlock()
	runKernel := u.Booted.Kernel
	if prevSlot != "" {
		if d, err := fileDigest(u.Boot.SlotFile(prevSlot, KernelFile)); err == nil {
			runKernel = d
		}
	}
	if runKernel == "" {
		runKernel = nextKernel // unknown: only a file change can then ask for the kexec path
	}
	res.Plan = makePlan(run, u.Booted, next, runKernel, nextKernel, u.BootCfg, nextCfg, u.SV, work)
	if req.DryRun {
		return res, nil
	}
	cmdline := req.Cmdline
	if cmdline == "" {
		cmdline = u.nextCmdline()
	}
	rec := Record{ID: newID(), From: run.ImageID, To: next.ImageID, Slot: slot, PrevSlot: prevSlot,
		Path: res.Plan.Path, State: StateApplying, Started: time.Now()}
	if !req.Rollback {
		if err := u.Boot.SetManifest(slot, next); err != nil {
			return res, err
		}
	}
	switch res.Plan.Path {
	case PathNothing:
		return res, fmt.Errorf("image %s is running already; nothing to do", next.ImageID)
	case PathInPlace:
		err = u.inPlace(&rec, res.Plan, initrd, nextCfg, cmdline)
	default:
		err = u.viaKexec(&rec, kernel, initrd, cmdline)
		res.Pending = err == nil
	}
	res.Record = rec
	return res, err
}

func (u *Updater) inPlace(rec *Record, p Plan, initrd string, nextCfg *config.Config, cmdline string) error {
	u.saveRecord(*rec)
	want := map[string]string{}
	for from, to := range p.Binaries {
		want[from] = to
	}
	if err := extract(initrd, want); err != nil {
		return u.finish(rec, StateRolledBack, fmt.Sprintf("extracting the new binaries: %v", err), nil)
	}
	failedBefore := map[string]bool{}
	for _, st := range u.SV.Statuses() {
		failedBefore[st.Name] = st.State == services.Failed
	}
	prev := u.SV.Config()
	u.Log.Info("update: applying in place", "from", rec.From, "to", rec.To, "slot", rec.Slot)
	rep := u.SV.Reload(inPlaceConfig(nextCfg, p.Binaries))
	reason := strings.Join(rep.Errors, "; ")
	if reason == "" {
		reason = u.confirm(failedBefore)
	}
	if reason != "" {
		// Back to the binaries and settings that ran: upgraded again over the held sockets.
		back := u.SV.Reload(&config.Config{Service: prev})
		if len(back.Errors) > 0 {
			reason += "; rolling back: " + strings.Join(back.Errors, "; ")
		}
		return u.finish(rec, StateRolledBack, reason, nil)
	}
	if err := u.Boot.AddEntry(rec.Slot, cmdline, false); err != nil {
		return u.finish(rec, StateConfirmed, "", fmt.Errorf("confirmed, but the boot entry of slot %s was not written: %w", rec.Slot, err))
	}
	err := u.Boot.Confirm(rec.Slot)
	u.mu.Lock()
	u.running, u.slot = u.manifestOf(rec.Slot), rec.Slot
	u.mu.Unlock()
	u.prune()
	return u.finish(rec, StateConfirmed, "", err)
}

// prune removes from RunDir/images (tmpfs: memory) what no service runs any more: binaries of
// earlier updates and configs of images that are not running.
func (u *Updater) prune() {
	dir := filepath.Join(u.RunDir, "images")
	keep := map[string]bool{u.Status().RunningImage: true}
	for _, s := range u.SV.Config() {
		if rel, ok := strings.CutPrefix(s.Exec[0], dir+"/"); ok {
			keep[strings.SplitN(rel, "/", 2)[0]] = true
		}
	}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if !keep[e.Name()] {
			_ = os.RemoveAll(filepath.Join(dir, e.Name()))
		}
	}
}

func (u *Updater) manifestOf(slot string) imagefmt.Manifest {
	m, _ := u.Boot.Manifest(slot)
	return m
}

// finish records how an update ended.
func (u *Updater) finish(rec *Record, state, reason string, err error) error {
	rec.State, rec.Reason, rec.Ended = state, reason, time.Now()
	u.saveRecord(*rec)
	if state == StateRolledBack {
		_ = u.Boot.Discard(rec.Slot)
		u.Log.Error("update rolled back", "to", rec.To, "reason", reason, system.KmsgKey, true)
		return fmt.Errorf("%w: %s", ErrNotConfirmed, reason)
	}
	u.Log.Info("update confirmed", "image", rec.To, "slot", rec.Slot, "path", rec.Path, system.KmsgKey, true)
	return err
}

// confirm waits, within ConfirmTimeout, for every service meant to run to be ready; a
// restart = "never" service that exited 0 is fine, one that had failed before the update does
// not hold it up, nor one held down by a conflict (the service it yields to is waited for on
// its own). It returns "" or why not.
func (u *Updater) confirm(failedBefore map[string]bool) string {
	timeout := u.ConfirmTimeout
	if timeout <= 0 {
		timeout = config.DefaultConfirmTimeout
	}
	deadline := time.Now().Add(timeout)
	ok := func(st services.Status) bool {
		switch {
		case st.State == services.Running, st.State == services.Reloading, st.Completed: // a oneshot that ran
			return true
		case st.State == services.Stopped && st.HeldBy != "":
			return true
		}
		return st.State == services.Stopped && st.Restart == config.RestartNever && strings.Contains(st.LastExit, "status 0")
	}
	for _, st := range u.SV.Statuses() {
		if failedBefore[st.Name] {
			continue
		}
		s := u.SV.Service(st.Name)
		if s == nil || s.WaitUntil(ok, time.Until(deadline)) {
			continue
		}
		now := s.Status()
		why := string(now.State)
		if now.Error != "" {
			why += ": " + now.Error
		}
		return fmt.Sprintf("%s not ready within confirm_timeout %s (%s)", st.Name, timeout, why)
	}
	return ""
}

func (u *Updater) viaKexec(rec *Record, kernel, initrd, cmdline string) error {
	if u.Kexec == nil {
		return u.finish(rec, StateRolledBack, "this update needs a kexec, and baton is not PID 1 here", nil)
	}
	if rec.PrevSlot == "" {
		return fmt.Errorf("the running image is in no slot on %s (booted from elsewhere): a kexec update could not roll back; install the image with make image first", u.Boot.Dir)
	}
	// A slot that is confirmed already (a rollback) keeps its entry; the trial is in the
	// record and on the command line, and the default switches once the boot confirms it.
	if u.Boot.slotState(rec.Slot) != Confirmed {
		if err := u.Boot.AddEntry(rec.Slot, cmdline, true); err != nil {
			return err
		}
	}
	rec.State = StateTrial
	u.saveRecord(*rec)
	// panic=10: a new kernel that panics reboots through the firmware, which boots the
	// confirmed slot (the trial is never the default).
	full := strings.TrimSpace(cmdline + " baton.slot=" + rec.Slot + " baton.trial=" + rec.ID + " panic=10")
	u.Log.Info("update: kexec into the new slot on trial", "slot", rec.Slot, "image", rec.To)
	if err := u.Kexec(kernel, initrd, full); err != nil {
		_ = u.Boot.Discard(rec.Slot)
		return u.finish(rec, StateRolledBack, fmt.Sprintf("kexec load refused: %v", err), nil)
	}
	return nil
}

// ConfirmTrial runs in the boot that follows a kexec update, once the services are started:
// it confirms the slot, or records why not and kexecs back into the slot it came from.
func (u *Updater) ConfirmTrial() {
	id, ok := u.Cmdline.Get("baton.trial")
	if !ok {
		return
	}
	rec, err := u.record()
	if err != nil || rec.ID != id || rec.State != StateTrial {
		return
	}
	reason := u.confirm(nil)
	if reason == "" {
		if err := u.Boot.Confirm(rec.Slot); err != nil {
			u.Log.Error("update: confirmed, but the default boot entry not switched", "err", err)
		}
		_ = u.finish(&rec, StateConfirmed, "", nil)
		return
	}
	// Taken while the record still says "trial" (a re-exec is refused then), so none slips in
	// between the record and the kexec back.
	release, busy := u.exclusive()
	if busy == nil {
		defer release()
	}
	_ = u.finish(&rec, StateRolledBack, reason, nil)
	if u.Kexec == nil || rec.PrevSlot == "" {
		return
	}
	back := u.nextCmdline("baton.slot="+rec.PrevSlot, "baton.rolledback="+rec.ID)
	err = busy
	if err == nil {
		err = u.Kexec(u.Boot.SlotFile(rec.PrevSlot, KernelFile), u.Boot.SlotFile(rec.PrevSlot, InitrdFile), back)
	}
	if err != nil {
		u.Log.Error("update: rolling back by kexec failed; the firmware's default is the confirmed slot", "err", err, system.KmsgKey, true)
	}
}

func short(digest string) string {
	d := strings.TrimPrefix(digest, "sha256:")
	if len(d) > 16 {
		return d[:16]
	}
	if d == "" {
		return "none"
	}
	return d
}

// rollbackSlot is the other confirmed slot, which initctl rollback switches to.
func (u *Updater) rollbackSlot() (string, error) {
	u.mu.Lock()
	running := u.slot
	u.mu.Unlock()
	if running == "" {
		return "", errors.New("rollback: this boot did not come from a slot on " + u.Boot.Dir)
	}
	other := Other(running)
	if st := u.Boot.slotState(other); st != Confirmed {
		return "", fmt.Errorf("rollback: slot %s is %s, not a confirmed image to go back to", other, st)
	}
	return other, nil
}

func readManifestFile(path string) (imagefmt.Manifest, error) {
	f, err := os.Open(path)
	if err != nil {
		return imagefmt.Manifest{}, err
	}
	defer f.Close()
	return imagefmt.ReadManifest(f)
}

// loadConfigOf extracts the new image's config and validates it as its PID 1 would.
func (u *Updater) loadConfigOf(initrd, id string) (*config.Config, error) {
	dst := u.stagedConfig(id)
	if _, err := os.Stat(dst); err != nil {
		if err := extract(initrd, map[string]string{config.DefaultPath: dst}); err != nil {
			return nil, fmt.Errorf("%w: the new image's config: %v", ErrBadUpload, err)
		}
	}
	cfg, err := config.Load(dst)
	if err != nil {
		return nil, fmt.Errorf("%w: the new image's config: %v", ErrBadUpload, err)
	}
	return cfg, nil
}
