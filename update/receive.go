package update

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/baton-init/baton/config"
	"github.com/baton-init/baton/images/imagefmt"
)

// Upload errors a client can act on; the API maps them to status codes.
var (
	ErrBadUpload = errors.New("bad upload")
	ErrNoSpace   = errors.New("not enough space on the boot partition")
)

// spaceMargin is left free on the boot partition after an upload (vfat needs room for its
// directory clusters, and the timeline of the next shutdown is written there).
const spaceMargin = 1 << 20

// receive writes one file of a new image into slot, streamed: never held whole in memory, its
// SHA-256 computed on the way and compared with the one the client sent, its size checked
// against the free space first, its content checked after. Whatever fails leaves the slot
// without that file and without a loader entry.
//
// For the initramfs it returns the image's manifest and config, read in the same pass.
// With trusted keys, the initramfs must carry a signature of its manifest by one of them.
func (b Boot) receive(slot, file string, size int64, wantSHA string, body io.Reader, trusted []string) (m imagefmt.Manifest, cfg []byte, err error) {
	if file != KernelFile && file != InitrdFile {
		return m, nil, fmt.Errorf("%w: unknown file %q (kernel or initrd)", ErrBadUpload, file)
	}
	want := strings.TrimPrefix(strings.ToLower(wantSHA), "sha256:")
	if len(want) != 64 {
		return m, nil, fmt.Errorf("%w: %s: the client must send the file's SHA-256 (64 hex digits), got %q", ErrBadUpload, file, wantSHA)
	}
	if size <= 0 {
		return m, nil, fmt.Errorf("%w: %s: the size must be given (Content-Length)", ErrBadUpload, file)
	}
	// The firmware must never see a half-written slot: its entry goes before any byte.
	if err := b.Discard(slot); err != nil {
		return m, nil, err
	}
	if err := os.MkdirAll(b.slotDir(slot), 0o755); err != nil {
		return m, nil, err
	}
	final := b.SlotFile(slot, file)
	if file == InitrdFile { // the manifest describes the initramfs it came from
		os.Remove(b.SlotFile(slot, manifestFile))
	}
	var replaced int64
	if st, err := os.Stat(final); err == nil {
		replaced = st.Size()
	}
	free, err := b.Free()
	if err != nil {
		return m, nil, err
	}
	if free+replaced < size+spaceMargin {
		return m, nil, fmt.Errorf("%w: %s is %d MiB, %d MiB free on %s (with the slot's old %s)", ErrNoSpace, file,
			size>>20, (free+replaced)>>20, b.Dir, file)
	}
	part := final + ".part"
	f, err := os.OpenFile(part, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return m, nil, err
	}
	defer os.Remove(part) // gone once renamed; left only by a failure
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(f, h), io.LimitReader(body, size+1))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	switch got := hex.EncodeToString(h.Sum(nil)); {
	case err != nil:
		return m, nil, fmt.Errorf("%s: receiving: %w (after %d of %d bytes)", file, err, n, size)
	case n != size:
		return m, nil, fmt.Errorf("%w: %s: %d bytes received, %d announced (truncated upload?)", ErrBadUpload, file, n, size)
	case got != want:
		return m, nil, fmt.Errorf("%w: %s: SHA-256 %s, the client said %s (corrupted in transit?); nothing switched", ErrBadUpload, file, got, want)
	}
	if m, cfg, err = checkContent(file, part, trusted); err != nil {
		return m, nil, err
	}
	if err := os.Rename(part, final); err != nil {
		return m, nil, err
	}
	syncDir(b.slotDir(slot))
	if file == InitrdFile {
		// Kept beside the image (the slot still has no entry), so that applying it does not
		// read the archive again.
		if err := b.SetManifest(slot, m); err != nil {
			return m, nil, err
		}
	}
	return m, cfg, nil
}

// checkContent refuses what the next step could not use: a kernel that is not a bzImage, an
// initramfs baton cannot read or that has no manifest.
func checkContent(file, path string, trusted []string) (imagefmt.Manifest, []byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return imagefmt.Manifest{}, nil, err
	}
	defer f.Close()
	if file == InitrdFile {
		m, files, err := imagefmt.ReadManifestAnd(f, config.DefaultPath, imagefmt.SignaturePath)
		if err != nil {
			return m, nil, fmt.Errorf("%w: initrd: %v", ErrBadUpload, err)
		}
		if len(trusted) > 0 {
			if err := imagefmt.VerifySignature(files[imagefmt.ManifestPath], files[imagefmt.SignaturePath], trusted); err != nil {
				return m, nil, fmt.Errorf("%w: initrd: %v", ErrBadUpload, err)
			}
		}
		cfg, ok := files[config.DefaultPath]
		if !ok {
			return m, nil, fmt.Errorf("%w: initrd: no %s in the image", ErrBadUpload, config.DefaultPath)
		}
		return m, cfg, nil
	}
	hdr := make([]byte, 0x206)
	if _, err := io.ReadFull(f, hdr); err != nil || hdr[0x1fe] != 0x55 || hdr[0x1ff] != 0xaa || !bytes.Equal(hdr[0x202:0x206], []byte("HdrS")) {
		return imagefmt.Manifest{}, nil, fmt.Errorf("%w: kernel: not an x86 bzImage (no \"HdrS\" boot header at 0x202)", ErrBadUpload)
	}
	return imagefmt.Manifest{}, nil, nil
}

// fileDigest is the SHA-256 of a file, as in manifests.
func fileDigest(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), nil
}
