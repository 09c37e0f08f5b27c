package update

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/u-root/u-root/pkg/cpio"
	"golang.org/x/sys/unix"

	"github.com/baton-init/baton/config"
	"github.com/baton-init/baton/images/imagefmt"
	"github.com/baton-init/baton/services"
	"github.com/baton-init/baton/system"
)

var reaper *system.Reaper

func TestMain(m *testing.M) {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		panic(err)
	}
	reaper = system.NewReaper(slog.New(slog.NewTextHandler(io.Discard, nil)))
	os.Exit(m.Run())
}

func testLog() *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// fixture is an appliance on the host: its "root file system" is the host's (service binaries
// at their real paths), its boot partition a directory.
type fixture struct {
	dir, svc, cfgPath string
	cfgExtra          string // added to the config of the images built
	u                 *Updater
	sv                *services.Supervisor
}

const cfgText = "[[service]]\nname = \"svc\"\nexec = [%q]\nrestart = \"never\"\nupgrade_settle = \"300ms\"\n"

// image builds an initramfs whose service binary is script, and returns its bytes and
// manifest. The binary's image path is the host path f.svc. (Built here with u-root's cpio
// writer: the image builder's package imports the control API, which imports this one.)
func (f *fixture) image(t *testing.T, script string, extra map[string]string) ([]byte, imagefmt.Manifest) {
	return f.signedImage(t, script, extra, nil, nil)
}

// signedImage is image built for kernel (its digest in the manifest) and signed by priv.
func (f *fixture) signedImage(t *testing.T, script string, extra map[string]string, kernel []byte, priv ed25519.PrivateKey) ([]byte, imagefmt.Manifest) {
	t.Helper()
	files := map[string][]byte{config.DefaultPath: []byte(strings.Replace(cfgText, "%q", `"`+f.svc+`"`, 1) + f.cfgExtra), f.svc: []byte(script)}
	for p, data := range extra {
		files[p] = []byte(data)
	}
	m := imagefmt.Manifest{Files: map[string]string{}}
	for p, data := range files {
		m.Files[p], _ = imagefmt.Digest(bytes.NewReader(data))
	}
	if kernel != nil {
		m.Kernel, _ = imagefmt.Digest(bytes.NewReader(kernel))
	}
	m.ImageID = m.ID()
	mj, _ := json.Marshal(m)
	files[imagefmt.ManifestPath] = mj
	if priv != nil {
		files[imagefmt.SignaturePath] = imagefmt.Sign(priv, mj)
	}
	var names []string
	for p := range files {
		names = append(names, p)
	}
	sort.Strings(names)
	var buf bytes.Buffer
	zw, _ := zstd.NewWriter(&buf)
	w := cpio.Newc.Writer(zw)
	for _, p := range names {
		rec := cpio.StaticRecord(files[p], cpio.Info{Name: p[1:], Mode: cpio.S_IFREG | 0o755})
		if err := w.WriteRecord(rec); err != nil {
			t.Fatal(err)
		}
	}
	cpio.WriteTrailer(w)
	zw.Close()
	return buf.Bytes(), m
}

const v1 = "#!/bin/sh\necho version 1\nexec sleep 100\n"

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{dir: t.TempDir()}
	f.svc = filepath.Join(f.dir, "root/bin/svc")
	os.MkdirAll(filepath.Dir(f.svc), 0o755)
	os.WriteFile(f.svc, []byte(v1), 0o755) // the booted root file system's binary
	boot := Boot{Dir: filepath.Join(f.dir, "boot")}
	initrd, booted := f.image(t, v1, nil)
	// Slot a holds the running image, confirmed and default, as make image lays it out.
	os.MkdirAll(boot.slotDir("a"), 0o755)
	os.WriteFile(boot.SlotFile("a", KernelFile), fakeKernel("k1"), 0o644)
	os.WriteFile(boot.SlotFile("a", InitrdFile), initrd, 0o644)
	if err := boot.SetManifest("a", booted); err != nil {
		t.Fatal(err)
	}
	if err := boot.AddEntry("a", "console=ttyS0", false); err != nil {
		t.Fatal(err)
	}
	if err := boot.Confirm("a"); err != nil {
		t.Fatal(err)
	}
	f.cfgPath = filepath.Join(f.dir, "baton.toml")
	os.WriteFile(f.cfgPath, []byte(strings.Replace(cfgText, "%q", `"`+f.svc+`"`, 1)), 0o644)
	cfg, err := config.Load(f.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	sv, err := services.New(cfg, services.Options{Log: testLog(), Reaper: reaper, RunDir: filepath.Join(f.dir, "run")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sv.StopAll(); sv.Close() })
	if r := sv.StartAll(); r[0].Err != nil {
		t.Fatal(r[0].Err)
	}
	f.sv = sv
	f.u = &Updater{Boot: boot, Log: testLog(), SV: sv, RunDir: filepath.Join(f.dir, "run"), Booted: booted, BootCfg: cfg,
		ConfirmTimeout: 5 * time.Second}
	f.u.Init()
	return f
}

// fakeKernel has what a bzImage's boot header needs to pass the check, and some content.
func fakeKernel(content string) []byte {
	b := make([]byte, 0x400)
	b[0x1fe], b[0x1ff] = 0x55, 0xaa
	copy(b[0x202:], "HdrS")
	copy(b[0x300:], content)
	return b
}

func sum(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

func (f *fixture) upload(t *testing.T, kernel, initrd []byte) {
	t.Helper()
	for name, data := range map[string][]byte{KernelFile: kernel, InitrdFile: initrd} {
		if err := f.u.Receive(name, int64(len(data)), sum(data), bytes.NewReader(data)); err != nil {
			t.Fatalf("upload %s: %v", name, err)
		}
	}
}

func TestInPlaceUpdateConfirmedThenFirmwareDefault(t *testing.T) {
	f := newFixture(t)
	oldPid := f.sv.Status("svc").Pid
	initrd, next := f.image(t, "#!/bin/sh\necho version 2\nexec sleep 100\n", nil)
	f.upload(t, fakeKernel("k1"), initrd)
	dry, err := f.u.Apply(ApplyRequest{DryRun: true})
	if err != nil || dry.Plan.Path != PathInPlace || len(dry.Plan.Services.Upgraded) != 1 {
		t.Fatalf("dry run: %+v, %v", dry.Plan, err)
	}
	if f.sv.Status("svc").Pid != oldPid {
		t.Fatal("a dry run changed something")
	}
	res, err := f.u.Apply(ApplyRequest{})
	if err != nil {
		t.Fatalf("apply: %v (%+v)", err, res)
	}
	st := f.sv.Status("svc")
	if st.Pid == oldPid || st.State != services.Running || !strings.Contains(st.Exec, "/run/images/") {
		t.Fatalf("service after the update: %+v", st)
	}
	status := f.u.Status()
	if status.RunningImage != next.ImageID || status.RunningSlot != "b" || status.Last.State != StateConfirmed {
		t.Fatalf("status %+v", status)
	}
	if f.u.Boot.Default() != "b" {
		t.Errorf("the firmware's default is %q, want the confirmed new slot b", f.u.Boot.Default())
	}
	// initctl rollback: back to slot a's image, in place too, and it is the default again.
	res, err = f.u.Apply(ApplyRequest{Rollback: true})
	if err != nil || res.Plan.Path != PathInPlace {
		t.Fatalf("rollback: %v (%+v)", err, res.Plan)
	}
	if st := f.sv.Status("svc"); st.Exec != f.svc || st.State != services.Running || f.u.Boot.Default() != "a" || f.u.Status().RunningSlot != "a" {
		t.Fatalf("after the rollback: %+v, default %s", st, f.u.Boot.Default())
	}
	if ents, _ := os.ReadDir(filepath.Join(f.u.RunDir, "images")); len(ents) != 1 { // the running image's config only
		t.Errorf("after rolling back to the root file system's binary, %d extraction dirs are kept", len(ents))
	}
	if _, err := f.u.Apply(ApplyRequest{Rollback: true}); err != nil { // and forth again
		t.Fatalf("rollback to b: %v", err)
	}
	// The same image again: nothing to do.
	f.upload(t, fakeKernel("k1"), initrd)
	if _, err := f.u.Apply(ApplyRequest{}); err == nil {
		t.Errorf("update to the running image: %v", err)
	}
}

func TestInPlaceUpdateNotReadyRollsBack(t *testing.T) {
	f := newFixture(t)
	oldPid := f.sv.Status("svc").Pid
	initrd, _ := f.image(t, "#!/bin/sh\necho broken; exit 3\n", nil)
	f.upload(t, fakeKernel("k1"), initrd)
	_, err := f.u.Apply(ApplyRequest{})
	if !errors.Is(err, ErrNotConfirmed) || !strings.Contains(err.Error(), "upgrade_settle") {
		t.Fatalf("apply of a broken service: %v", err)
	}
	if st := f.sv.Status("svc"); st.Pid != oldPid || st.State != services.Running {
		t.Fatalf("the old version stopped serving: %+v", st)
	}
	st := f.u.Status()
	if st.Last.State != StateRolledBack || st.Slots[1].State != Empty || f.u.Boot.Default() != "a" {
		t.Fatalf("status after the rollback: %+v", st)
	}
}

func TestKexecPathPlannedForNonServiceChanges(t *testing.T) {
	f := newFixture(t)
	initrd, _ := f.image(t, v1, map[string]string{"/init": "another PID 1"})
	f.upload(t, fakeKernel("k1"), initrd)
	res, err := f.u.Apply(ApplyRequest{DryRun: true})
	if err != nil || res.Plan.Path != PathKexec || !strings.Contains(strings.Join(res.Plan.Why, ";"), "init binary") {
		t.Fatalf("plan %+v, %v", res.Plan, err)
	}
	initrd, _ = f.image(t, v1, nil)
	f.upload(t, fakeKernel("k2"), initrd)
	if res, _ := f.u.Apply(ApplyRequest{DryRun: true}); res.Plan.Path != PathKexec || res.Plan.Why[0] != "the kernel changed" {
		t.Fatalf("new kernel: plan %+v", res.Plan)
	}
	// Outside PID 1 there is no kexec: refused and undone, the service untouched.
	if _, err := f.u.Apply(ApplyRequest{}); err == nil || !strings.Contains(err.Error(), "not PID 1") {
		t.Errorf("kexec path outside PID 1: %v", err)
	}
}

func TestBadUploadsChangeNothing(t *testing.T) {
	f := newFixture(t)
	before := f.u.Status().Slots
	initrd, _ := f.image(t, v1, nil)
	cases := []struct {
		name, file string
		data       []byte
		size       int64
		sha        string
		want       string
	}{
		{"truncated", InitrdFile, initrd[:len(initrd)/2], int64(len(initrd)), sum(initrd), "truncated"},
		{"corrupted", InitrdFile, append([]byte{1}, initrd[1:]...), int64(len(initrd)), sum(initrd), "SHA-256"},
		{"not a kernel", KernelFile, initrd, int64(len(initrd)), sum(initrd), "not an x86 bzImage"},
		{"no manifest", InitrdFile, fakeKernel("x"), 0x400, sum(fakeKernel("x")), "not an initramfs"},
		{"no digest", KernelFile, fakeKernel("x"), 0x400, "", "SHA-256"},
		{"too large", InitrdFile, initrd, 1 << 50, sum(initrd), "not enough space"},
	}
	for _, c := range cases {
		err := f.u.Receive(c.file, c.size, c.sha, bytes.NewReader(c.data))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error with %q", c.name, err, c.want)
		}
		if _, err := os.Stat(f.u.Boot.SlotFile("b", c.file)); err == nil {
			t.Errorf("%s: slot b has a %s", c.name, c.file)
		}
	}
	if after := f.u.Status().Slots; !reflect.DeepEqual(after[0], before[0]) || after[1].State != Empty {
		t.Errorf("slots changed: %+v → %+v", before, after)
	}
	f.u.busy.Lock()
	err := f.u.Receive(KernelFile, 0x400, sum(fakeKernel("x")), bytes.NewReader(fakeKernel("x")))
	f.u.busy.Unlock()
	if !errors.Is(err, ErrBusy) {
		t.Errorf("upload during another: %v", err)
	}
}

// With [update] trusted_keys, only images signed by one of the keys are accepted, and only
// with the kernel their manifest names.
func TestOnlySignedImagesWhenKeysAreTrusted(t *testing.T) {
	f := newFixture(t)
	pub, priv, _ := ed25519.GenerateKey(nil)
	_, other, _ := ed25519.GenerateKey(nil)
	f.u.BootCfg.Update.TrustedKeys = []string{imagefmt.PublicKeyString(pub)}
	f.cfgExtra = fmt.Sprintf("[update]\ntrusted_keys = [%q]\n", imagefmt.PublicKeyString(pub))
	v2 := "#!/bin/sh\necho version 2\nexec sleep 100\n"
	k := fakeKernel("k1")
	for _, c := range []struct {
		name string
		key  ed25519.PrivateKey
		want string
	}{{"unsigned", nil, "not signed"}, {"signed by another key", other, "not by a trusted key"}} {
		initrd, _ := f.signedImage(t, v2, nil, k, c.key)
		err := f.u.Receive(InitrdFile, int64(len(initrd)), sum(initrd), bytes.NewReader(initrd))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", c.name, err, c.want)
		}
	}
	initrd, _ := f.signedImage(t, v2, nil, k, priv)
	f.upload(t, fakeKernel("another kernel"), initrd)
	if _, err := f.u.Apply(ApplyRequest{}); err == nil || !strings.Contains(err.Error(), "not the one the signed manifest names") {
		t.Errorf("signed image with another kernel: %v", err)
	}
	f.upload(t, k, initrd)
	if res, err := f.u.Apply(ApplyRequest{}); err != nil {
		t.Errorf("signed image with its kernel: %v (plan %+v)", err, res.Plan)
	}
}

// A slot's command line keeps this boot's parameters, not what belonged to this boot only:
// the boot loader's, kexec's markers, the fast method's memmap= (with its baton.spared=), the
// update's own.
func TestNextCmdline(t *testing.T) {
	u := &Updater{Cmdline: system.ParseCmdline(`BOOT_IMAGE=/vmlinuz console=ttyS0 memmap=64M$0x10000000 baton.prev=ab12 ` +
		`memmap=0x2000$0x100000 baton.spared=` + spared("0x2000$0x100000") + ` baton.slot=a baton.trial=x1 panic=10 note="two words" baton.once.m=1`)}
	want := `console=ttyS0 memmap=64M$0x10000000 note="two words" baton.slot=b`
	if got := u.nextCmdline("baton.slot=b"); got != want {
		t.Errorf("nextCmdline =\n%s\nwant\n%s", got, want)
	}
}

// spared is the baton.spared= value of a memmap= value, as the kexec package writes it.
func spared(memmap string) string { return fmt.Sprintf("%08x", crc32.ChecksumIEEE([]byte(memmap))) }
