// Package imagefmt is what an appliance image looks like from outside the builder: its
// manifest, its initramfs archive, and the boot entry of the slot that holds it. Both the image
// builder and a running appliance (initctl update) read and write these.
package imagefmt

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"

	"github.com/klauspost/compress/zstd"
	"github.com/u-root/u-root/pkg/cpio"
)

// ManifestPath is where an image describes itself.
const ManifestPath = "/etc/baton/manifest.json"

// Manifest is what an image holds, by digest: a running appliance compares its own with a new
// image's to choose the least disruptive way to become it (update.Plan).
type Manifest struct {
	ImageID string `json:"image_id"` // the first 16 hex digits of the SHA-256 of the rest
	// Files: every regular file and symlink in the archive, by path, as "sha256:HEX" (a
	// symlink as "link:TARGET"). The init binary, the config and the modules are among them.
	Files map[string]string `json:"files"`
	// KernelReleases are the lib/modules/<release> trees packed: the kernels it can boot.
	KernelReleases []string `json:"kernel_releases,omitempty"`
	// Kernel is the SHA-256 of the kernel the image was built to boot with (mkimage -kernel).
	Kernel string `json:"kernel,omitempty"`
}

// ID is derived from the content alone, so the same inputs give the same id.
func (m Manifest) ID() string {
	c := m
	c.ImageID = ""
	b, _ := json.Marshal(c) // map keys are sorted: canonical
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}

// Verify checks that the id matches the content (a manifest edited or cut in transit does not).
func (m Manifest) Verify() error {
	if m.ImageID == "" || len(m.Files) == 0 {
		return errors.New("manifest has no image id or no files")
	}
	if id := m.ID(); id != m.ImageID {
		return fmt.Errorf("manifest says image %s but its content is image %s", m.ImageID, id)
	}
	return nil
}

// Digest is the SHA-256 of what r holds, as manifests write it.
func Digest(r io.Reader) (string, error) {
	h := sha256.New()
	if _, err := io.Copy(h, r); err != nil {
		return "", err
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), nil
}

// OpenInitramfs returns a reader of the archive's cpio stream, whatever its compression
// (zstd, gzip or none, told by the magic bytes).
func OpenInitramfs(r io.Reader) (io.Reader, func(), error) {
	br := bufio.NewReader(r)
	magic, err := br.Peek(6)
	if err != nil {
		return nil, nil, fmt.Errorf("not an initramfs: %w", err)
	}
	switch {
	case bytes.HasPrefix(magic, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		d, err := zstd.NewReader(br, zstd.WithDecoderConcurrency(1))
		if err != nil {
			return nil, nil, err
		}
		return d, d.Close, nil
	case bytes.HasPrefix(magic, []byte{0x1f, 0x8b}):
		g, err := gzip.NewReader(br)
		if err != nil {
			return nil, nil, fmt.Errorf("initramfs: gzip: %w", err)
		}
		return g, func() { g.Close() }, nil
	case string(magic) == "070701":
		return br, func() {}, nil
	}
	return nil, nil, fmt.Errorf("not an initramfs baton can read: starts with %x (want a newc cpio archive, plain or compressed with zstd or gzip)", magic[:4])
}

// ReadInitramfs walks the archive in r and calls fn for each entry with its contents (a
// reader valid during the call); fn returns false to stop.
func ReadInitramfs(r io.Reader, fn func(name string, info cpio.Info, body io.Reader) bool) error {
	cr, done, err := OpenInitramfs(r)
	if err != nil {
		return err
	}
	defer done()
	rr := cpio.Newc.Reader(&readerAt{r: cr})
	for {
		rec, err := rr.ReadRecord()
		if errors.Is(err, io.EOF) { // u-root's EOFReader: the trailer was read
			return nil
		}
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return fmt.Errorf("initramfs: the archive ends in the middle of a record (truncated?): %w", err)
		}
		if err != nil {
			return fmt.Errorf("initramfs: %w", err)
		}
		if rec.Info.Name == cpio.Trailer {
			return nil
		}
		body := io.NewSectionReader(rec.ReaderAt, 0, int64(rec.Info.FileSize))
		if !fn(path.Clean("/"+rec.Info.Name), rec.Info, body) {
			return nil
		}
	}
}

// readerAt lets u-root's cpio reader, which wants an io.ReaderAt, read a stream front to back
// (it reads each record's body after its header, in order).
type readerAt struct {
	r   io.Reader
	off int64
	buf []byte // bytes read ahead of off, kept for a re-read of the same range
	at  int64
}

func (s *readerAt) ReadAt(p []byte, off int64) (int, error) {
	if off < s.at {
		return 0, fmt.Errorf("initramfs: read at %d after %d: the archive is read once, in order", off, s.at)
	}
	// Skip forward.
	if off > s.off {
		if _, err := io.CopyN(io.Discard, s.r, off-s.off); err != nil {
			return 0, err
		}
		s.off = off
	}
	n, err := io.ReadFull(s.r, p)
	s.at, s.off = off, off+int64(n)
	if err == io.ErrUnexpectedEOF {
		err = io.EOF
	}
	return n, err
}

// ReadManifest finds and decodes the manifest of the initramfs in r.
func ReadManifest(r io.Reader) (Manifest, error) {
	m, _, err := ReadManifestAnd(r)
	return m, err
}

// maxSmallFile bounds what ReadManifestAnd keeps in memory of one file.
const maxSmallFile = 4 << 20

// ReadManifestAnd reads the manifest and, in the same pass, the small files named (e.g. the
// config): one decompression of the archive instead of one each.
func ReadManifestAnd(r io.Reader, paths ...string) (Manifest, map[string][]byte, error) {
	var m Manifest
	want := map[string]bool{ManifestPath: true}
	for _, p := range paths {
		want[p] = true
	}
	got := map[string][]byte{}
	var rerr error
	err := ReadInitramfs(r, func(name string, _ cpio.Info, body io.Reader) bool {
		if !want[name] {
			return true
		}
		b, err := io.ReadAll(io.LimitReader(body, maxSmallFile))
		if err != nil {
			rerr = err
			return false
		}
		got[name] = b
		return len(got) < len(want)
	})
	if err == nil {
		err = rerr
	}
	if err != nil {
		return m, got, err
	}
	data, ok := got[ManifestPath]
	if !ok {
		return m, got, fmt.Errorf("the initramfs has no %s: not built by baton's mkimage (or by one older than updates)", ManifestPath)
	}
	if err := json.Unmarshal(data, &m); err != nil {
		return m, got, fmt.Errorf("%s: %w", ManifestPath, err)
	}
	return m, got, m.Verify()
}

// LoaderEntry is the systemd-boot entry of an image slot ("a" or "b"): /slot-X/vmlinuz and
// /slot-X/initramfs.img. baton.slot= tells the booted baton which slot it runs from.
func LoaderEntry(slot, cmdline string) string {
	return fmt.Sprintf("title baton (slot %s)\nlinux /slot-%s/vmlinuz\ninitrd /slot-%s/initramfs.img\noptions %s baton.slot=%s\n",
		slot, slot, slot, strings.TrimSpace(cmdline), slot)
}
