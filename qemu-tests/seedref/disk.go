package seedref

import (
	"fmt"
	"io"
	"os"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/disk"
	"github.com/diskfs/go-diskfs/filesystem"
)

// BuildDisk writes the appliance's /boot: a FAT32 file system over the whole disk (no
// partition table, so it is /dev/vda) holding the kernel and the initramfs that kexec -l loads.
func BuildDisk(out, kernel, initrd string) error {
	files := map[string]string{"/vmlinuz": kernel, "/initrd.img": initrd}
	var payload int64
	for _, h := range files {
		st, err := os.Stat(h)
		if err != nil {
			return fmt.Errorf("seed boot disk: %w", err)
		}
		payload += st.Size()
	}
	// FAT32 needs ≥ 65525 clusters: 64 MiB with 512-byte clusters is safe.
	size := max(int64(64<<20), (payload*5/4+(16<<20))&^(1<<20-1))
	_ = os.Remove(out)
	d, err := diskfs.Create(out, size, diskfs.SectorSizeDefault)
	if err != nil {
		return fmt.Errorf("seed boot disk %s: %w", out, err)
	}
	defer d.Close()
	fsys, err := d.CreateFilesystem(disk.FilesystemSpec{Partition: 0, FSType: filesystem.TypeFat32, VolumeLabel: "SEEDBOOT"})
	if err != nil {
		return fmt.Errorf("seed boot disk %s: FAT32: %w", out, err)
	}
	for guest, host := range files {
		if err := copyInto(fsys, guest, host); err != nil {
			return fmt.Errorf("seed boot disk %s: %s: %w", out, guest, err)
		}
	}
	return nil
}

func copyInto(fsys filesystem.FileSystem, guest, host string) error {
	in, err := os.Open(host)
	if err != nil {
		return err
	}
	defer in.Close()
	w, err := fsys.OpenFile(guest, os.O_CREATE|os.O_RDWR)
	if err != nil {
		return err
	}
	if _, err := io.Copy(w, in); err != nil {
		return err
	}
	return w.Close()
}
