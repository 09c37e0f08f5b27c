package images

import (
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"github.com/u-root/u-root/pkg/cpio"

	"github.com/baton-init/baton/images/imagefmt"
)

// AddManifest computes the archive's manifest, puts it at ManifestPath and returns it. Call
// it last: it describes what is in the archive now. kernel is the host path of the kernel the
// image is meant for, or "".
func (f *Initramfs) AddManifest(kernel string) (imagefmt.Manifest, error) {
	m := imagefmt.Manifest{Files: map[string]string{}}
	delete(f.entries, imagefmt.ManifestPath)
	delete(f.entries, imagefmt.SignaturePath) // made from the manifest, so not in it
	for _, p := range f.Paths() {
		rec := f.entries[p]
		switch rec.Info.Mode & cpio.S_IFMT {
		case cpio.S_IFLNK:
			target, err := io.ReadAll(io.NewSectionReader(rec.ReaderAt, 0, int64(rec.Info.FileSize)))
			if err != nil {
				return m, fmt.Errorf("manifest: %s: %w", p, err)
			}
			m.Files[p] = "link:" + string(target)
		case cpio.S_IFREG:
			var r io.Reader
			if src, ok := f.sources[p]; ok {
				file, err := os.Open(src)
				if err != nil {
					return m, fmt.Errorf("manifest: %s: %w", p, err)
				}
				defer file.Close()
				r = file
			} else {
				r = io.NewSectionReader(rec.ReaderAt, 0, int64(rec.Info.FileSize))
			}
			d, err := imagefmt.Digest(r)
			if err != nil {
				return m, fmt.Errorf("manifest: %s: %w", p, err)
			}
			m.Files[p] = d
		}
	}
	for p := range f.entries {
		if rel, ok := strings.CutPrefix(p, "/lib/modules/"); ok && !strings.Contains(rel, "/") {
			m.KernelReleases = append(m.KernelReleases, rel)
		}
	}
	sort.Strings(m.KernelReleases)
	if kernel != "" {
		file, err := os.Open(kernel)
		if err != nil {
			return m, fmt.Errorf("manifest: kernel: %w", err)
		}
		defer file.Close()
		if m.Kernel, err = imagefmt.Digest(file); err != nil {
			return m, fmt.Errorf("manifest: kernel %s: %w", kernel, err)
		}
	}
	m.ImageID = m.ID()
	b, err := json.MarshalIndent(m, "", " ")
	if err != nil {
		return m, err
	}
	f.AddData(imagefmt.ManifestPath, append(b, '\n'), 0o644)
	return m, nil
}

// Sign adds the manifest's signature by priv (after AddManifest): an appliance whose config
// lists [update] trusted_keys accepts only images signed by one of them.
func (f *Initramfs) Sign(priv ed25519.PrivateKey) error {
	rec, ok := f.entries[imagefmt.ManifestPath]
	if !ok {
		return fmt.Errorf("sign: no manifest in the image yet")
	}
	data, err := io.ReadAll(io.NewSectionReader(rec.ReaderAt, 0, int64(rec.Info.FileSize)))
	if err != nil {
		return fmt.Errorf("sign: %w", err)
	}
	f.AddData(imagefmt.SignaturePath, imagefmt.Sign(priv, data), 0o644)
	return nil
}
