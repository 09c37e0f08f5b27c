package images

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/u-root/u-root/pkg/cpio"

	"github.com/baton-init/baton/images/imagefmt"
)

func TestManifestRoundTrip(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "web")
	os.WriteFile(bin, []byte("#!/bin/true\nv1"), 0o755)
	build := func() (*Initramfs, imagefmt.Manifest) {
		img := NewInitramfs()
		img.AddData("/etc/baton/baton.toml", []byte("hostname = \"x\"\n"), 0o644)
		if err := img.AddFile("/bin/web", bin, 0o755); err != nil {
			t.Fatal(err)
		}
		img.AddSymlink("/bin/initctl", "/init")
		img.AddDir("/lib/modules/6.1.0-1-amd64", 0o755)
		m, err := img.AddManifest("")
		if err != nil {
			t.Fatal(err)
		}
		return img, m
	}
	img, m := build()
	if _, m2 := build(); m2.ImageID != m.ImageID {
		t.Errorf("same inputs, ids %s and %s", m.ImageID, m2.ImageID)
	}
	if m.Files["/bin/initctl"] != "link:/init" || !strings.HasPrefix(m.Files["/bin/web"], "sha256:") ||
		!reflect.DeepEqual(m.KernelReleases, []string{"6.1.0-1-amd64"}) {
		t.Errorf("manifest %+v", m)
	}
	for _, c := range Compressions {
		var buf bytes.Buffer
		if err := img.Write(&buf, c); err != nil {
			t.Fatal(err)
		}
		got, err := imagefmt.ReadManifest(bytes.NewReader(buf.Bytes()))
		if err != nil || !reflect.DeepEqual(got, m) {
			t.Errorf("%s: read back %+v, %v; want %+v", c, got, err, m)
		}
		var web string
		imagefmt.ReadInitramfs(bytes.NewReader(buf.Bytes()), func(name string, _ cpio.Info, body io.Reader) bool {
			if name == "/bin/web" {
				b, _ := io.ReadAll(body)
				web = string(b)
			}
			return true
		})
		if web != "#!/bin/true\nv1" {
			t.Errorf("%s: /bin/web read back as %q", c, web)
		}
	}
	// A changed binary is another image.
	os.WriteFile(bin, []byte("#!/bin/true\nv2"), 0o755)
	if _, m3 := build(); m3.ImageID == m.ImageID || m3.Files["/bin/web"] == m.Files["/bin/web"] {
		t.Errorf("changed binary, same manifest: %+v", m3)
	}
	bad := m
	bad.Files = map[string]string{"/init": "sha256:00"}
	if err := bad.Verify(); err == nil {
		t.Error("a manifest whose content does not match its id verified")
	}
}

func TestReadManifestRefuses(t *testing.T) {
	if _, err := imagefmt.ReadManifest(strings.NewReader("MZ\x90\x00 not an archive at all")); err == nil || !strings.Contains(err.Error(), "not an initramfs") {
		t.Errorf("garbage: %v", err)
	}
	img := NewInitramfs()
	img.AddData("/init", []byte("x"), 0o755)
	var buf bytes.Buffer
	img.Write(&buf, "zstd")
	if _, err := imagefmt.ReadManifest(&buf); err == nil || !strings.Contains(err.Error(), "no /etc/baton/manifest.json") {
		t.Errorf("no manifest: %v", err)
	}
	img.AddManifest("")
	buf.Reset()
	img.Write(&buf, "gzip")
	cut := buf.Bytes()[:buf.Len()/2]
	if _, err := imagefmt.ReadManifest(bytes.NewReader(cut)); err == nil {
		t.Error("a truncated archive gave a manifest")
	}
}

func TestSignedManifest(t *testing.T) {
	prefix := filepath.Join(t.TempDir(), "update")
	pub, err := imagefmt.GenerateKey(prefix)
	if err != nil {
		t.Fatal(err)
	}
	priv, err := imagefmt.ReadSigningKey(prefix + ".key")
	if err != nil {
		t.Fatal(err)
	}
	img := NewInitramfs()
	img.AddData("/etc/baton/baton.toml", []byte("hostname = \"x\"\n"), 0o644)
	if _, err := img.AddManifest(""); err != nil {
		t.Fatal(err)
	}
	if err := img.Sign(priv); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	img.Write(&buf, "zstd")
	_, files, err := imagefmt.ReadManifestAnd(bytes.NewReader(buf.Bytes()), imagefmt.SignaturePath)
	if err != nil {
		t.Fatal(err)
	}
	man, sig := files[imagefmt.ManifestPath], files[imagefmt.SignaturePath]
	if err := imagefmt.VerifySignature(man, sig, []string{pub}); err != nil {
		t.Errorf("signed by the trusted key: %v", err)
	}
	other, _ := imagefmt.GenerateKey(filepath.Join(t.TempDir(), "other"))
	if err := imagefmt.VerifySignature(man, sig, []string{other}); err == nil {
		t.Error("verified against another key")
	}
	if err := imagefmt.VerifySignature(append([]byte(" "), man...), sig, []string{pub}); err == nil {
		t.Error("a changed manifest verified")
	}
	if err := imagefmt.VerifySignature(man, nil, []string{pub}); err != imagefmt.ErrUnsigned {
		t.Errorf("no signature: %v", err)
	}
}
