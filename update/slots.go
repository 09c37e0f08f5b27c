// Package update ships a new appliance image to a running baton and switches to it the least
// disruptive way: services only → upgraded in place over their held sockets; anything else →
// one kexec into the new slot. A switch that is not confirmed healthy is undone by itself.
//
// The boot partition holds two slots, each a kernel, an initramfs and that image's manifest,
// with a systemd-boot entry each:
//
//	/slot-a/vmlinuz /slot-a/initramfs.img /slot-a/manifest.json
//	/slot-b/…
//	/loader/entries/baton-a.conf     confirmed (the firmware may boot it)
//	/loader/entries/baton-b+3.conf   on trial (systemd-boot's boot counting: 3 tries left)
//	/loader/loader.conf              "default baton-a.conf": always a confirmed slot
//
// vfat has no journal: nothing the firmware reads is ever rewritten in place. Files are
// written under another name, synced, read back and renamed; loader.conf is replaced by a
// rename (one directory entry).
package update

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/baton-init/baton/images/imagefmt"
)

// Slot names.
var slotNames = []string{"a", "b"}

// Files of a slot.
const (
	KernelFile   = "vmlinuz"
	InitrdFile   = "initramfs.img"
	manifestFile = "manifest.json"
)

// Boot is the boot partition, mounted (rw) at Dir.
type Boot struct {
	Dir string
}

// SlotState is what the boot partition says of a slot.
type SlotState string

const (
	Empty     SlotState = "empty"     // no entry: never written, or being written
	Trial     SlotState = "trial"     // an entry with tries left, not confirmed
	Confirmed SlotState = "confirmed" // an entry the firmware may boot
)

// SlotInfo describes one slot.
type SlotInfo struct {
	Name           string    `json:"name"`
	State          SlotState `json:"state"`
	Default        bool      `json:"default"` // the firmware boots it
	ImageID        string    `json:"image_id,omitempty"`
	KernelReleases []string  `json:"kernel_releases,omitempty"`
	Written        string    `json:"written,omitempty"` // when its manifest was written
}

func (b Boot) slotDir(slot string) string { return filepath.Join(b.Dir, "slot-"+slot) }

// SlotFile is the path of one of a slot's files.
func (b Boot) SlotFile(slot, file string) string { return filepath.Join(b.slotDir(slot), file) }

func (b Boot) entriesDir() string { return filepath.Join(b.Dir, "loader", "entries") }

// Slots describes both slots.
func (b Boot) Slots() []SlotInfo {
	def := b.defaultEntry()
	var out []SlotInfo
	for _, s := range slotNames {
		si := SlotInfo{Name: s, State: Empty}
		if e := b.entryOf(s); e != "" {
			si.State, si.Default = Confirmed, e == def
			if strings.Contains(e, "+") {
				si.State = Trial
			}
		}
		if m, err := b.Manifest(s); err == nil {
			si.ImageID, si.KernelReleases = m.ImageID, m.KernelReleases
			if st, err := os.Stat(b.SlotFile(s, manifestFile)); err == nil {
				si.Written = st.ModTime().UTC().Format("2006-01-02 15:04:05Z")
			}
		}
		out = append(out, si)
	}
	return out
}

func (b Boot) slotState(slot string) SlotState {
	for _, si := range b.Slots() {
		if si.Name == slot {
			return si.State
		}
	}
	return Empty
}

// Manifest reads a slot's manifest.
func (b Boot) Manifest(slot string) (imagefmt.Manifest, error) {
	var m imagefmt.Manifest
	data, err := os.ReadFile(b.SlotFile(slot, manifestFile))
	if err != nil {
		return m, err
	}
	if err := json.Unmarshal(data, &m); err != nil {
		return m, fmt.Errorf("slot %s: manifest: %w", slot, err)
	}
	return m, m.Verify()
}

// entryOf returns the file name of the slot's loader entry ("baton-a.conf", "baton-b+3.conf",
// "baton-b+2-1.conf"), or "".
func (b Boot) entryOf(slot string) string {
	ents, _ := os.ReadDir(b.entriesDir())
	for _, e := range ents {
		n := e.Name()
		if n == "baton-"+slot+".conf" || (strings.HasPrefix(n, "baton-"+slot+"+") && strings.HasSuffix(n, ".conf")) {
			return n
		}
	}
	return ""
}

func (b Boot) defaultEntry() string {
	data, err := os.ReadFile(filepath.Join(b.Dir, "loader", "loader.conf"))
	if err != nil {
		return ""
	}
	for _, l := range strings.Split(string(data), "\n") {
		if f := strings.Fields(l); len(f) == 2 && f[0] == "default" {
			return f[1]
		}
	}
	return ""
}

// Default is the slot the firmware boots.
func (b Boot) Default() string {
	def := b.defaultEntry()
	for _, s := range slotNames {
		if e := b.entryOf(s); e != "" && e == def {
			return s
		}
	}
	return ""
}

// Other is the slot that is not s.
func Other(s string) string {
	if s == "a" {
		return "b"
	}
	return "a"
}

// Running finds the slot this boot came from: baton.slot= on the command line, else the slot
// whose image is the running one. "" when neither says (booted from elsewhere).
func (b Boot) Running(cmdlineSlot, imageID string) string {
	if cmdlineSlot == "a" || cmdlineSlot == "b" {
		return cmdlineSlot
	}
	for _, s := range slotNames {
		if m, err := b.Manifest(s); err == nil && m.ImageID == imageID {
			return s
		}
	}
	return ""
}

// Clear makes a slot empty before it is written: its entry goes first, so the firmware never
// sees a slot whose files are half written.
func (b Boot) Clear(slot string) error {
	if e := b.entryOf(slot); e != "" {
		if b.defaultEntry() == e {
			return fmt.Errorf("slot %s is the firmware's default: it is not overwritten", slot)
		}
		if err := os.Remove(filepath.Join(b.entriesDir(), e)); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(b.slotDir(slot), 0o755); err != nil {
		return err
	}
	for _, f := range []string{manifestFile, KernelFile, InitrdFile} {
		if err := os.Remove(b.SlotFile(slot, f)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	syncDir(b.entriesDir())
	return nil
}

// SetManifest records the image a slot holds.
func (b Boot) SetManifest(slot string, m imagefmt.Manifest) error {
	data, err := json.MarshalIndent(m, "", " ")
	if err != nil {
		return err
	}
	return writeFileSynced(b.SlotFile(slot, manifestFile), data)
}

// AddEntry writes the slot's loader entry: on trial (boot counting: systemd-boot tries it at
// most 3 times, and never by default) or confirmed.
func (b Boot) AddEntry(slot, cmdline string, trial bool) error {
	name := "baton-" + slot + ".conf"
	if trial {
		name = "baton-" + slot + "+3.conf"
	}
	if e := b.entryOf(slot); e != "" {
		if err := os.Remove(filepath.Join(b.entriesDir(), e)); err != nil {
			return err
		}
	}
	entry := imagefmt.LoaderEntry(slot, cmdline)
	if err := os.MkdirAll(b.entriesDir(), 0o755); err != nil {
		return err
	}
	return writeFileSynced(filepath.Join(b.entriesDir(), name), []byte(entry))
}

// Confirm blesses a slot (its entry loses the boot-counting suffix) and makes it the
// firmware's default. The order matters for a power cut: after the rename the slot is a
// confirmed entry, and only then does loader.conf point at it.
func (b Boot) Confirm(slot string) error {
	e := b.entryOf(slot)
	if e == "" {
		return fmt.Errorf("slot %s has no loader entry", slot)
	}
	final := "baton-" + slot + ".conf"
	if e != final {
		if err := os.Rename(filepath.Join(b.entriesDir(), e), filepath.Join(b.entriesDir(), final)); err != nil {
			return fmt.Errorf("bless slot %s: %w", slot, err)
		}
		syncDir(b.entriesDir())
	}
	loader := fmt.Sprintf("timeout 0\ndefault %s\n", final)
	return writeFileSynced(filepath.Join(b.Dir, "loader", "loader.conf"), []byte(loader))
}

// Discard removes a slot's entry (a trial that failed): the firmware can no longer pick it.
func (b Boot) Discard(slot string) error {
	if e := b.entryOf(slot); e != "" && b.defaultEntry() != e {
		err := os.Remove(filepath.Join(b.entriesDir(), e))
		syncDir(b.entriesDir())
		return err
	}
	return nil
}

// writeFileSynced writes data under a temporary name that no loader reads, syncs it, reads
// it back and renames it into place.
func writeFileSynced(path string, data []byte) error {
	tmp := path + ".new"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		var back []byte
		if back, err = os.ReadFile(tmp); err == nil && string(back) != string(data) {
			err = fmt.Errorf("%s: read back differs from what was written", tmp)
		}
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	syncDir(filepath.Dir(path))
	return nil
}

func syncDir(dir string) {
	if f, err := os.Open(dir); err == nil {
		_ = f.Sync()
		f.Close()
	}
}

// Free is how many bytes the boot partition has left.
func (b Boot) Free() (int64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(b.Dir, &st); err != nil {
		return 0, err
	}
	return int64(st.Bavail) * st.Bsize, nil
}
