package kexec

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"time"
)

// maxUnpackedInitrd bounds what fastInitrd holds in memory (and an eighth of MemAvailable): an
// initramfs larger than that unpacked goes to the next kernel compressed, as it is.
const maxUnpackedInitrd = 512 << 20

// fastInitrd reads the initrd for the fast method and, when it is one zstd or gzip stream
// of a newc cpio archive, unpacks it here, while the services still run: the next kernel
// then finds a plain archive and skips its own decompression, which under QEMU's TCG took
// 0.5 s of the demo's boot (kernel → /init 4.10–4.15 s with its 7 MB zstd image, 3.54–3.63 s
// with the same 23 MB uncompressed). Anything else (another compression, concatenated
// an early microcode cpio in front, a stream that does not unpack or is too large)
// goes as it is: the kernel unpacks whatever it can boot, so nothing is lost but the time.
// note says what happened, for the log.
func fastInitrd(path string) (data []byte, note string, err error) {
	if err := roomForFile("the initrd "+path, path); err != nil {
		return nil, "", err
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, "", err
	}
	var kind string
	switch {
	case bytes.HasPrefix(raw, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		kind = "zstd"
	case bytes.HasPrefix(raw, []byte{0x1f, 0x8b}):
		kind = "gzip"
	default:
		return raw, "initrd as it is", nil
	}
	start := time.Now()
	out, why := unpack(kind, raw)
	if why != "" {
		return raw, fmt.Sprintf("%s initrd as it is (%s)", kind, why), nil
	}
	return out, fmt.Sprintf("%s initrd unpacked, %d→%d bytes in %v", kind, len(raw), len(out),
		time.Since(start).Round(time.Millisecond)), nil
}

// unpack decompresses raw, or says why not.
func unpack(kind string, raw []byte) ([]byte, string) {
	r, err := decoder(kind, bytes.NewReader(raw))
	if err != nil {
		return nil, err.Error()
	}
	if c, ok := r.(io.Closer); ok {
		defer c.Close()
	}
	limit := int64(maxUnpackedInitrd)
	if avail, ok := memAvailable(); ok {
		// A quarter of what is available, for the buffer growing by doubling to twice what
		// it holds, beside the initrd itself and the kernel: an eighth unpacked.
		limit = min(limit, int64(avail/8))
	}
	var buf bytes.Buffer
	buf.Grow(int(min(4*int64(len(raw)), limit)))
	n, err := io.Copy(&buf, io.LimitReader(r, limit+1))
	switch {
	case err != nil:
		return nil, "it does not unpack: " + err.Error()
	case n > limit:
		return nil, fmt.Sprintf("larger than %d MiB unpacked", limit>>20)
	case !bytes.HasPrefix(buf.Bytes(), []byte("070701")):
		return nil, "not a newc cpio archive inside"
	}
	return buf.Bytes(), ""
}
