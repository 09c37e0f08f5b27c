package kexec

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

func TestFastInitrd(t *testing.T) {
	archive := append([]byte("070701"), bytes.Repeat([]byte("0"), 4000)...)
	zst := func(b []byte) []byte {
		var buf bytes.Buffer
		w, _ := zstd.NewWriter(&buf)
		w.Write(b)
		w.Close()
		return buf.Bytes()
	}
	gz := func(b []byte) []byte {
		var buf bytes.Buffer
		w := gzip.NewWriter(&buf)
		w.Write(b)
		w.Close()
		return buf.Bytes()
	}
	for _, tc := range []struct {
		name     string
		file     []byte
		unpacked bool
		note     string
	}{
		{"zstd cpio", zst(archive), true, "zstd initrd unpacked"},
		{"gzip cpio", gz(archive), true, "gzip initrd unpacked"},
		{"two gzip members", append(gz(archive), gz(archive)...), true, "gzip initrd unpacked"},
		{"plain cpio", archive, false, "initrd as it is"},
		{"zstd of something else", zst([]byte("not an archive")), false, "not a newc cpio archive inside"},
		{"truncated zstd", zst(archive)[:20], false, "it does not unpack"},
		{"zstd then garbage", append(zst(archive), []byte("garbage")...), false, "it does not unpack"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "initrd")
			if err := os.WriteFile(p, tc.file, 0o644); err != nil {
				t.Fatal(err)
			}
			got, note, err := fastInitrd(p)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(note, tc.note) {
				t.Errorf("note %q, want it to say %q", note, tc.note)
			}
			want := tc.file
			if tc.unpacked {
				want = archive
				if tc.name == "two gzip members" {
					want = append(append([]byte{}, archive...), archive...)
				}
			}
			if !bytes.Equal(got, want) {
				t.Errorf("got %d bytes, want %d (unpacked %v)", len(got), len(want), tc.unpacked)
			}
		})
	}
	if _, _, err := fastInitrd(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Error("a missing initrd is no error")
	}
}
