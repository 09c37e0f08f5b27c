package images

import (
	"bytes"
	"compress/gzip"
	"errors"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/u-root/u-root/pkg/cpio"

	"github.com/baton-init/baton/handoff/execshim"
	"github.com/baton-init/baton/system/kmod"
)

const fixtureModules = "testdata/modules" // see testdata/mkfixtures.sh

func TestResolveModules(t *testing.T) {
	set, err := ResolveModules(fixtureModules, []string{"virtio-net", "ext4"})
	if err != nil {
		t.Fatal(err)
	}
	if set.Index.Release != "6.1.0-test" {
		t.Errorf("release = %q", set.Index.Release)
	}
	// virtio_pci is not a dependency of virtio_net, but comes with the virtio core; ext4 is
	// built in, so it needs nothing.
	want := []string{"failover", "net_failover", "virtio", "virtio_net", "virtio_pci", "virtio_ring"}
	if got := set.Names(); !reflect.DeepEqual(got, want) {
		t.Errorf("modules = %v, want %v", got, want)
	}
	order, err := set.Index.Order("virtio_net")
	if err != nil {
		t.Fatal(err)
	}
	pos := map[string]int{}
	for i, n := range order {
		pos[n] = i
	}
	for mod, deps := range map[string][]string{"virtio_net": {"virtio_ring", "virtio", "net_failover"}, "net_failover": {"failover"}} {
		for _, d := range deps {
			if pos[d] > pos[mod] {
				t.Errorf("load order %v puts %s before its dependency %s", order, mod, d)
			}
		}
	}
	if m := set.Index.Match("pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00"); !reflect.DeepEqual(m, []string{"virtio_pci"}) {
		t.Errorf("PCI modalias matched %v, want [virtio_pci]", m)
	}
	if m := set.Index.Match("virtio:d00000001v00001AF4"); !reflect.DeepEqual(m, []string{"virtio_net"}) {
		t.Errorf("virtio modalias matched %v, want [virtio_net]", m)
	}
}

func TestResolveModulesErrors(t *testing.T) {
	for _, tc := range []struct {
		name  string
		dir   string
		mods  []string
		wants []string
	}{
		{"unknown module", fixtureModules, []string{"nosuch"}, []string{"module nosuch not found", "6.1.0-test"}},
		{"missing dependency", fixtureModules, []string{"broken-dep"}, []string{"module missing_mod (a dependency of broken_dep) not found"}},
		{"no module tree", "testdata/none", []string{"virtio"}, []string{"testdata/none"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ResolveModules(tc.dir, tc.mods)
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tc.wants {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

// writeSpec writes a config and fake binaries and returns a Spec for them.
func writeSpec(t *testing.T) Spec {
	t.Helper()
	dir := t.TempDir()
	cfg := filepath.Join(dir, "baton.toml")
	os.WriteFile(cfg, []byte("[boot]\nmodules = [\"virtio_net\"]\n[[service]]\nname = \"web\"\nexec = [\"/bin/web\"]\n"), 0o644)
	os.MkdirAll(filepath.Join(dir, "bin"), 0o755)
	os.WriteFile(filepath.Join(dir, "bin/web"), []byte("web binary"), 0o755)
	os.WriteFile(filepath.Join(dir, "init"), []byte("init binary"), 0o755)
	os.WriteFile(filepath.Join(dir, "extra"), []byte("extra file"), 0o644)
	return Spec{Config: cfg, Init: filepath.Join(dir, "init"), BinDir: filepath.Join(dir, "bin"),
		Files: map[string]string{"/etc/extra": filepath.Join(dir, "extra")}, KernelModules: []string{fixtureModules},
		Carry: []string{"squashfs"}}
}

func build(t *testing.T, spec Spec, compression string) []byte {
	t.Helper()
	img, _, err := Build(spec)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := img.Write(&buf, compression); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestImageReproducible(t *testing.T) {
	for _, c := range Compressions {
		t.Run(c, func(t *testing.T) {
			a := build(t, writeSpec(t), c)
			b := build(t, writeSpec(t), c) // other temp dirs, other file mtimes
			if !bytes.Equal(a, b) {
				t.Fatalf("two builds from the same inputs differ (%d vs %d bytes)", len(a), len(b))
			}
		})
	}
}

func TestImageContents(t *testing.T) {
	for _, c := range Compressions {
		t.Run(c, func(t *testing.T) {
			recs := readArchive(t, build(t, writeSpec(t), c), c)
			var names []string
			byName := map[string]cpio.Record{}
			for _, r := range recs {
				names = append(names, r.Name)
				byName[r.Name] = r
				if r.MTime != 0 || r.UID != 0 || r.GID != 0 {
					t.Errorf("%s: mtime %d uid %d gid %d, want all 0", r.Name, r.MTime, r.UID, r.GID)
				}
			}
			for i := 1; i < len(names); i++ {
				if names[i-1] >= names[i] {
					t.Errorf("entries not sorted: %s before %s", names[i-1], names[i])
				}
			}
			for name, want := range map[string]string{"init": "init binary", "bin/web": "web binary", "etc/extra": "extra file"} {
				r, ok := byName[name]
				if !ok {
					t.Errorf("%s missing", name)
					continue
				}
				got, _ := io.ReadAll(io.NewSectionReader(r.ReaderAt, 0, int64(r.FileSize)))
				if string(got) != want {
					t.Errorf("%s = %q, want %q", name, got, want)
				}
			}
			if r := byName["dev/console"]; r.Mode&cpio.S_IFMT != cpio.S_IFCHR || r.Rmajor != 5 || r.Rminor != 1 {
				t.Errorf("dev/console = %v, want char device 5:1", r.Info)
			}
			if r := byName["sbin/modprobe"]; r.Mode&cpio.S_IFMT != cpio.S_IFLNK {
				t.Errorf("sbin/modprobe is not a symlink: %v", r.Info)
			}
			ixRec, ok := byName["lib/modules/6.1.0-test/"+kmod.IndexFile]
			if !ok {
				t.Fatalf("module index missing; entries: %v", names)
			}
			ixData, _ := io.ReadAll(io.NewSectionReader(ixRec.ReaderAt, 0, int64(ixRec.FileSize)))
			if !strings.Contains(string(ixData), `"squashfs"`) || !strings.Contains(string(ixData), "fs-squashfs") {
				t.Errorf("index lacks the carried squashfs module and its alias: %s", ixData)
			}
			if _, ok := byName["lib/modules/6.1.0-test/kernel/drivers/net/virtio_net.ko"]; !ok {
				t.Errorf("virtio_net.ko missing")
			}
		})
	}
}

// The small exec shim beside the init binary goes to /lib/baton/baton-exec, where PID 1 looks
// for it; without one there, the image has none (the services start through /init).
func TestImageShim(t *testing.T) {
	spec := writeSpec(t)
	has := func() (string, bool) {
		for _, r := range readArchive(t, build(t, spec, "none"), "none") {
			if r.Name == strings.TrimPrefix(execshim.Path, "/") {
				got, _ := io.ReadAll(io.NewSectionReader(r.ReaderAt, 0, int64(r.FileSize)))
				return string(got), true
			}
		}
		return "", false
	}
	if _, ok := has(); ok {
		t.Errorf("image has %s with no baton-exec beside init", execshim.Path)
	}
	os.WriteFile(filepath.Join(filepath.Dir(spec.Init), "baton-exec"), []byte("shim binary"), 0o755)
	if got, ok := has(); !ok || got != "shim binary" {
		t.Errorf("%s = %q (present %v), want the baton-exec beside init", execshim.Path, got, ok)
	}
}

func readArchive(t *testing.T, data []byte, compression string) []cpio.Record {
	t.Helper()
	var r io.Reader = bytes.NewReader(data)
	switch compression {
	case "gzip":
		gz, err := gzip.NewReader(r)
		if err != nil {
			t.Fatal(err)
		}
		r = gz
	case "zstd":
		zr, err := zstd.NewReader(r)
		if err != nil {
			t.Fatal(err)
		}
		defer zr.Close()
		r = zr
	}
	raw, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	recs, err := cpio.ReadAllRecords(cpio.Newc.Reader(bytes.NewReader(raw)))
	if err != nil && !errors.Is(err, io.EOF) {
		t.Fatal(err)
	}
	return recs
}

func TestBuildErrors(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mutate func(*Spec)
		want   string
	}{
		{"missing service binary", func(s *Spec) { os.Remove(filepath.Join(s.BinDir, "web")) }, "service web"},
		{"no bindir for a service", func(s *Spec) { s.BinDir = "" }, "no binary for /bin/web"},
		{"missing init", func(s *Spec) { s.Init = "/nonexistent/init" }, "/nonexistent/init"},
		{"missing extra file", func(s *Spec) { s.Files["/etc/x"] = "/nonexistent/x" }, "/etc/x"},
		{"unknown module", func(s *Spec) { s.Modules = []string{"nosuch"} }, "module nosuch not found"},
		{"dynamically linked init", func(s *Spec) { s.Init = "/bin/sh" }, "/init (/bin/sh) is dynamically linked"},
		{"missing shim", func(s *Spec) { s.Shim = "/nonexistent/baton-exec" }, "exec shim: "},
		{"dynamically linked shim", func(s *Spec) { s.Shim = "/bin/sh" }, "exec shim /bin/sh is dynamically linked"},
		{"bad config", func(s *Spec) { os.WriteFile(s.Config, []byte("hostnme = \"x\"\n"), 0o644) }, "baton.toml:1: hostnme: unknown key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			spec := writeSpec(t)
			tc.mutate(&spec)
			_, _, err := Build(spec)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Build error = %v, want it to mention %q", err, tc.want)
			}
		})
	}
}
