package images

import (
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/u-root/u-root/pkg/cpio"
)

// appSpec writes cfg (a config's services) beside a fake static init and returns its Spec.
func appSpec(t *testing.T, cfg string) (Spec, string) {
	t.Helper()
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "baton.toml"), []byte(cfg), 0o644)
	os.WriteFile(filepath.Join(dir, "init"), []byte("init binary"), 0o755)
	return Spec{Config: filepath.Join(dir, "baton.toml"), Init: filepath.Join(dir, "init")}, dir
}

func archive(t *testing.T, spec Spec) (map[string]cpio.Record, *Initramfs, []byte) {
	t.Helper()
	img, _, err := Build(spec)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := img.Write(&buf, "zstd"); err != nil {
		t.Fatal(err)
	}
	by := map[string]cpio.Record{}
	for _, r := range readArchive(t, buf.Bytes(), "zstd") {
		by["/"+r.Name] = r
	}
	return by, img, buf.Bytes()
}

func content(t *testing.T, r cpio.Record) string {
	t.Helper()
	b, _ := io.ReadAll(io.NewSectionReader(r.ReaderAt, 0, int64(r.FileSize)))
	return string(b)
}

// lddPaths is what ldd prints for bin (the interpreter and every resolved library), plus
// what each of those is a symbolic link to: the files the loader opens.
func lddPaths(t *testing.T, bin string) []string {
	t.Helper()
	out, err := exec.Command("ldd", bin).Output()
	if err != nil {
		t.Skipf("ldd %s: %v", bin, err)
	}
	set := map[string]bool{}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		var p string
		switch {
		case len(f) >= 3 && f[1] == "=>" && strings.HasPrefix(f[2], "/"):
			p = f[2]
		case len(f) >= 1 && strings.HasPrefix(f[0], "/"):
			p = f[0]
		default:
			continue
		}
		for hops := 0; hops < 10; hops++ {
			set[p] = true
			target, err := os.Readlink(p)
			if err != nil {
				break
			}
			if !filepath.IsAbs(target) {
				target = filepath.Join(filepath.Dir(p), target)
			}
			p = target
		}
	}
	var paths []string
	for p := range set {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	return paths
}

// A real dynamic binary from Debian: the image holds exactly what ldd says it loads, each
// once, the same bytes as on the host, and two builds are byte for byte equal.
func TestDynamicBinaryLibrariesAsLdd(t *testing.T) {
	const bin = "/usr/bin/curl"
	if _, err := os.Stat(bin); err != nil {
		t.Skipf("%s not installed (Debian package curl; make deps installs it)", bin)
	}
	want := lddPaths(t, bin)
	cfg := "[[service]]\nname = \"curl\"\nexec = [\"" + bin + "\", \"-V\"]\n"
	spec, _ := appSpec(t, cfg)
	by, img, first := archive(t, spec)
	var got []string
	for _, g := range img.Report.Groups {
		if g.Name != "service curl" {
			continue
		}
		for _, it := range g.Items {
			if it.Kind != "binary" {
				got = append(got, it.Path)
			}
		}
	}
	sort.Strings(got)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("packed for %s:\n%s\nldd (with link targets):\n%s", bin, strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	for _, p := range append(want, bin) {
		r, ok := by[p]
		if !ok {
			t.Errorf("%s not in the image", p)
			continue
		}
		st, _ := os.Lstat(p)
		if st.Mode().IsRegular() && int64(r.FileSize) != st.Size() {
			t.Errorf("%s: %d bytes in the image, %d on the host", p, r.FileSize, st.Size())
		}
		if st.Mode()&os.ModeSymlink != 0 && r.Mode&cpio.S_IFMT != cpio.S_IFLNK {
			t.Errorf("%s is a link on the host but not in the image", p)
		}
	}
	t.Logf("%s: %d paths packed besides the binary (%d libraries and links)", bin, len(got), len(want))
	if _, _, second := archive(t, spec); !bytes.Equal(first, second) {
		t.Errorf("two builds differ (%d and %d bytes)", len(first), len(second))
	}
}

// A binary whose library the loader cannot find is refused, naming both.
func TestMissingLibraryIsAnError(t *testing.T) {
	cc, err := exec.LookPath("cc")
	if err != nil {
		t.Skip("no C compiler to make a binary with a missing library (make deps installs gcc)")
	}
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "lib.c"), []byte("int batonfoo(void){return 1;}\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "m.c"), []byte("int batonfoo(void);\nint main(void){return batonfoo();}\n"), 0o644)
	for _, args := range [][]string{
		{"-shared", "-fPIC", "-o", "libbatonmissing.so", "lib.c"},
		{"-o", "needy", "m.c", "-L.", "-lbatonmissing"},
	} {
		cmd := exec.Command(cc, args...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("cc %v: %v\n%s", args, err, out)
		}
	}
	os.Remove(filepath.Join(dir, "libbatonmissing.so"))
	bin := filepath.Join(dir, "needy")
	spec, _ := appSpec(t, "[[service]]\nname = \"needy\"\nexec = [\""+bin+"\"]\n")
	_, _, err = Build(spec)
	if err == nil {
		t.Fatal("built an image whose binary cannot load")
	}
	for _, w := range []string{"service needy", bin, "libbatonmissing.so", "cannot find"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q lacks %q", err, w)
		}
	}
}

// Scripts bring their interpreter, or are refused with the reason.
func TestScripts(t *testing.T) {
	if _, err := os.Stat("/bin/sh"); err != nil {
		t.Skip("no /bin/sh")
	}
	for _, tc := range []struct {
		name, line string
		err        []string // nil: packs; else the error mentions these
	}{
		{"sh", "#!/bin/sh -e", nil},
		{"env", "#!/usr/bin/env python3", []string{"finds its interpreter in PATH", "#!/usr/bin/python3"}},
		{"missing interpreter", "#!/nonexistent/interp", []string{"/nonexistent/interp", "which this machine lacks"}},
		{"relative interpreter", "#!sh", []string{"not an absolute path"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			spec, dir := appSpec(t, "[[service]]\nname = \"s\"\nexec = [\"/app/run\"]\nfiles = [\"run:/app/run\"]\n")
			os.WriteFile(filepath.Join(dir, "run"), []byte(tc.line+"\necho hello\n"), 0o755)
			img, _, err := Build(spec)
			if tc.err == nil {
				if err != nil {
					t.Fatal(err)
				}
				real, _ := os.Readlink("/bin/sh") // dash, beside it
				for _, p := range []string{"/bin/sh", filepath.Join("/bin", real), "/lib64/ld-linux-x86-64.so.2"} {
					if !img.Has(p) {
						t.Errorf("%s not packed for a /bin/sh script", p)
					}
				}
				return
			}
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range append(tc.err, "service s", "/app/run") {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

// The three forms of files, directories with their links and modes, relative sources.
func TestServiceFiles(t *testing.T) {
	spec, dir := appSpec(t, `
[[service]]
name = "web"
exec = ["/bin/web"]
files = ["html:/srv/www", "conf/web.conf:/etc/web.conf", { src = "odd:name", dst = "/etc/odd" }, "ABS"]
state_dir = "web"
`)
	abs := filepath.Join(dir, "abs.txt")
	os.WriteFile(spec.Config, bytes.Replace(mustRead(t, spec.Config), []byte("ABS"), []byte(abs), 1), 0o644)
	os.WriteFile(abs, []byte("abs"), 0o600)
	os.MkdirAll(filepath.Join(dir, "html/sub"), 0o750)
	os.MkdirAll(filepath.Join(dir, "conf"), 0o755)
	os.MkdirAll(filepath.Join(dir, "bin"), 0o755)
	os.WriteFile(filepath.Join(dir, "html/index.html"), []byte("hi"), 0o644)
	os.WriteFile(filepath.Join(dir, "html/sub/run.sh"), []byte("#!/usr/bin/env nothing\n"), 0o755) // data: not followed
	os.Symlink("index.html", filepath.Join(dir, "html/home.html"))
	os.WriteFile(filepath.Join(dir, "conf/web.conf"), []byte("conf"), 0o644)
	os.WriteFile(filepath.Join(dir, "odd:name"), []byte("odd"), 0o644)
	os.WriteFile(filepath.Join(dir, "bin/web"), []byte("web binary"), 0o755)
	spec.BinDir = filepath.Join(dir, "bin")
	by, _, _ := archive(t, spec)
	for p, want := range map[string]string{"/srv/www/index.html": "hi", "/etc/web.conf": "conf", "/etc/odd": "odd", abs: "abs", "/bin/web": "web binary"} {
		if r, ok := by[p]; !ok || content(t, r) != want {
			t.Errorf("%s: %v %q, want %q", p, ok, content(t, r), want)
		}
	}
	if r := by["/srv/www/home.html"]; r.Mode&cpio.S_IFMT != cpio.S_IFLNK || content(t, r) != "index.html" {
		t.Errorf("home.html = %v, want a link to index.html", r.Info)
	}
	for p, mode := range map[string]uint64{"/srv/www/sub": 0o750, "/srv/www/sub/run.sh": 0o755, abs: 0o600} {
		if got := by[p].Mode &^ cpio.S_IFMT; got != mode {
			t.Errorf("%s: mode %o, want %o", p, got, mode)
		}
	}
}

func mustRead(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Users and groups the config names: the host's ids when it has them, else from 1000 up.
func TestAccountsInImage(t *testing.T) {
	spec, dir := appSpec(t, `
[[service]]
name = "a"
exec = ["/bin/a"]
user = "www-data"
[[service]]
name = "b"
exec = ["/bin/b"]
user = "zed"
group = "media"
  [[service.socket]]
  listen = "unix:///run/b.sock"
  owner = "app"
  group = "www-data"
`)
	os.WriteFile(filepath.Join(dir, "passwd"), []byte("root:x:0:0::/root:/bin/bash\nwww-data:x:33:33:www-data:/var/www:/usr/sbin/nologin\nold:x:1000:1000::/home/old:/bin/sh\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "group"), []byte("root:x:0:\nwww-data:x:33:\nmedia:x:1001:\n"), 0o644)
	os.MkdirAll(filepath.Join(dir, "bin"), 0o755)
	os.WriteFile(filepath.Join(dir, "bin/a"), nil, 0o755)
	os.WriteFile(filepath.Join(dir, "bin/b"), nil, 0o755)
	spec.BinDir, spec.HostPasswd, spec.HostGroup = filepath.Join(dir, "bin"), filepath.Join(dir, "passwd"), filepath.Join(dir, "group")
	by, _, first := archive(t, spec)
	wantPasswd := "root:x:0:0:root:/root:/bin/sh\nwww-data:x:33:33:www-data:/var/www:/usr/sbin/nologin\n" +
		"app:x:1000:1000:app:/nonexistent:/usr/sbin/nologin\nzed:x:1001:1002:zed:/nonexistent:/usr/sbin/nologin\n" +
		"nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
	wantGroup := "root:x:0:\nwww-data:x:33:\napp:x:1000:\nmedia:x:1001:\nzed:x:1002:\nnogroup:x:65534:\n"
	if got := content(t, by["/etc/passwd"]); got != wantPasswd {
		t.Errorf("passwd:\n%s\nwant:\n%s", got, wantPasswd)
	}
	if got := content(t, by["/etc/group"]); got != wantGroup {
		t.Errorf("group:\n%s\nwant:\n%s", got, wantGroup)
	}
	if _, _, second := archive(t, spec); !bytes.Equal(first, second) {
		t.Error("two builds differ")
	}
}
