package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"

	"github.com/baton-init/baton/config"
	"github.com/baton-init/baton/control"
	"github.com/baton-init/baton/images/imagefmt"
	"github.com/baton-init/baton/update"
)

// bootDir is where the boot partition (the image slots) is mounted.
const bootDir = "/boot"

// newUpdater prepares initctl update: it needs the image's manifest (written by mkimage) and
// the boot partition mounted at /boot. Without either, updates are refused with the reason.
func (m *machine) newUpdater() *update.Updater {
	data, err := os.ReadFile(imagefmt.ManifestPath)
	if err != nil {
		m.log.Warn("no image manifest: initctl update is not available", "err", err)
		return nil
	}
	var man imagefmt.Manifest
	if err := json.Unmarshal(data, &man); err != nil {
		m.log.Warn("image manifest unreadable: initctl update is not available", "err", err)
		return nil
	}
	if st, err := os.Stat(bootDir + "/loader"); err != nil || !st.IsDir() {
		m.log.Info("no boot partition with slots at " + bootDir + ": initctl update is not available")
		return nil
	}
	cfg := m.cfg
	if cfg == nil {
		cfg = &config.Config{}
	}
	u := &update.Updater{Boot: update.Boot{Dir: bootDir}, Log: m.log, SV: m.sv, RunDir: runDir, Booted: man,
		BootCfg: cfg, Cmdline: m.cmdline, ConfirmTimeout: cfg.Update.ConfirmTimeout.Duration,
		// Called with the change guard held (Exclusive): the update's kexec is part of it.
		Kexec: func(kernel, initrd, cmdline string) error {
			_, err := m.loadAndJump(control.KexecRequest{Kernel: kernel, Initrd: initrd, Cmdline: cmdline})
			return err
		},
		Exclusive: m.updateExclusive}
	u.Init()
	st := u.Status()
	m.log.Info("image", "id", man.ImageID, "slot", st.RunningSlot)
	return u
}

// updateExclusive is the change guard as the updater takes it; a refusal wraps
// update.ErrNotNow (409).
func (m *machine) updateExclusive(what string) (func(), error) {
	release, err := m.change.take(what)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", update.ErrNotNow, err)
	}
	return release, nil
}

// runningSlotFiles are the kernel and initramfs of the slot this boot came from: what
// initctl kexec boots when neither the request nor [kexec] names one.
func (m *machine) runningSlotFiles() (kernel, initrd string, err error) {
	u := m.updater.Load()
	if u == nil {
		return "", "", errors.New("no running slot on " + bootDir)
	}
	slot := u.Status().RunningSlot
	if slot == "" {
		return "", "", errors.New("this boot did not come from a slot on " + bootDir)
	}
	b := update.Boot{Dir: bootDir}
	return b.SlotFile(slot, update.KernelFile), b.SlotFile(slot, update.InitrdFile), nil
}
