// Package images builds appliance images: a compressed newc initramfs holding the init
// binary, its config, the services' binaries and the kernel modules they need.
package images

import (
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strings"

	"github.com/klauspost/compress/zstd"
	"github.com/u-root/u-root/pkg/cpio"
)

// Initramfs is the set of entries of an archive, keyed by path. Writing sorts them and fixes
// every timestamp, owner and inode number, so the same inputs give the same bytes.
type Initramfs struct {
	entries map[string]cpio.Record
	sources map[string]string // path → host file, for files read at write time
	// Report says what Build packed, for whom, with sizes.
	Report *Report
}

// NewInitramfs returns an archive holding the directories and device node every appliance
// needs before devtmpfs is mounted: the kernel opens /dev/console for /init's stdio.
func NewInitramfs() *Initramfs {
	f := &Initramfs{entries: map[string]cpio.Record{}, sources: map[string]string{}}
	for _, d := range []string{"/dev", "/proc", "/sys", "/run", "/tmp", "/root", "/etc", "/bin", "/sbin"} {
		f.AddDir(d, 0o755)
	}
	f.entries["/tmp"] = cpio.Directory("tmp", 0o1777)
	f.entries["/dev/console"] = cpio.CharDev("dev/console", 0o600, 5, 1)
	return f
}

func clean(p string) string { return path.Clean("/" + p) }

// AddDir adds a directory.
func (f *Initramfs) AddDir(p string, perm uint64) {
	p = clean(p)
	f.entries[p] = cpio.Directory(p[1:], perm)
}

// AddData adds a regular file with the given contents.
func (f *Initramfs) AddData(p string, data []byte, perm uint64) {
	p = clean(p)
	delete(f.sources, p)
	f.entries[p] = cpio.StaticRecord(data, cpio.Info{Name: p[1:], Mode: cpio.S_IFREG | perm})
}

// AddFile adds the host file src at p. A missing file is an error naming both.
func (f *Initramfs) AddFile(p, src string, perm uint64) error {
	p = clean(p)
	st, err := os.Stat(src)
	if err != nil {
		return fmt.Errorf("image file %s: %w", p, err)
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("image file %s: %s is not a regular file", p, src)
	}
	f.sources[p] = src
	f.entries[p] = cpio.Record{Info: cpio.Info{Name: p[1:], Mode: cpio.S_IFREG | perm, FileSize: uint64(st.Size())}}
	return nil
}

// AddSymlink adds a symbolic link at p pointing to target.
func (f *Initramfs) AddSymlink(p, target string) {
	p = clean(p)
	delete(f.sources, p)
	f.entries[p] = cpio.Symlink(p[1:], target)
}

// Has reports whether p is in the archive.
func (f *Initramfs) Has(p string) bool { _, ok := f.entries[clean(p)]; return ok }

// Paths returns every path in the archive, sorted, parents included.
func (f *Initramfs) Paths() []string {
	f.addParents()
	out := make([]string, 0, len(f.entries))
	for p := range f.entries {
		out = append(out, p)
	}
	sort.Strings(out)
	return out
}

func (f *Initramfs) addParents() {
	for p := range f.entries {
		for d := path.Dir(p); d != "/"; d = path.Dir(d) {
			if _, ok := f.entries[d]; !ok {
				f.entries[d] = cpio.Directory(d[1:], 0o755)
			}
		}
	}
}

// Compressions the kernel can unpack (Debian's has RD_GZIP, RD_XZ, RD_LZ4, RD_ZSTD).
var Compressions = []string{"gzip", "zstd", "none"}

// Write writes the archive, compressed, to w.
func (f *Initramfs) Write(w io.Writer, compression string) error {
	var cw io.WriteCloser
	switch compression {
	case "gzip":
		gz, _ := gzip.NewWriterLevel(w, gzip.BestCompression)
		cw = gz // a zero header: no name, no mtime
	case "zstd":
		// The kernel's zstd decoder needs the window to fit its limits; 8 MiB is safe.
		zw, err := zstd.NewWriter(w, zstd.WithEncoderLevel(zstd.SpeedBestCompression),
			zstd.WithWindowSize(8<<20), zstd.WithEncoderConcurrency(1))
		if err != nil {
			return err
		}
		cw = zw
	case "none":
		cw = nopCloser{w}
	default:
		return fmt.Errorf("compression %q: choose one of %s", compression, strings.Join(Compressions, ", "))
	}
	rw := cpio.Newc.Writer(cw)
	for i, p := range f.Paths() {
		rec := f.entries[p]
		rec.Info.Ino = uint64(i + 1)
		rec.Info.NLink = 1
		rec.Info.MTime, rec.Info.UID, rec.Info.GID = 0, 0, 0
		if src, ok := f.sources[p]; ok {
			file, err := os.Open(src)
			if err != nil {
				return fmt.Errorf("image file %s: %w", p, err)
			}
			rec.ReaderAt = file // the cpio writer closes it
		}
		if err := rw.WriteRecord(rec); err != nil {
			return fmt.Errorf("write %s: %w", p, err)
		}
	}
	if err := cpio.WriteTrailer(rw); err != nil {
		return err
	}
	return cw.Close()
}

type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }

// size is the length of the file at p (0 for anything else).
func (f *Initramfs) size(p string) int64 { return int64(f.entries[clean(p)].Info.FileSize) }
