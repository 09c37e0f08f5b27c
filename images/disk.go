package images

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strings"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/disk"
	"github.com/diskfs/go-diskfs/filesystem"
	"github.com/diskfs/go-diskfs/partition/gpt"

	"github.com/baton-init/baton/images/imagefmt"
)

// DiskSpec describes a UEFI boot disk: GPT with one EFI system partition (FAT32) that holds
// systemd-boot and two image slots (initctl update writes the inactive one), slot a filled
// with the kernel and the initramfs and its loader entry the default. The appliance mounts the
// partition at /boot.
type DiskSpec struct {
	Bootloader string            // systemd-bootx64.efi (Debian: systemd-boot-efi)
	Kernel     string            // becomes /slot-a/vmlinuz
	Initrd     string            // becomes /slot-a/initramfs.img (its manifest /slot-a/manifest.json)
	Cmdline    string            // the loader entry's options
	Files      map[string]string // more files on the partition: path → host file
	Label      string            // file system label and GPT partition name (default BOOT)
}

const (
	sector     = 512
	firstLBA   = 2048     // 1 MiB alignment
	minESPSize = 64 << 20 // FAT32 needs ≥ 65525 clusters; 64 MiB with 512-byte clusters is safe
)

// BuildDisk writes the disk image to out, sized to its contents. It needs neither root nor loop
// devices (go-diskfs writes the GPT and the FAT32 file system into the file), and the result is
// reproducible: fixed GUIDs and timestamps.
func BuildDisk(out string, spec DiskSpec) error {
	if spec.Label == "" {
		spec.Label = "BOOT"
	}
	files := map[string]string{"/EFI/BOOT/BOOTX64.EFI": spec.Bootloader, "/slot-a/vmlinuz": spec.Kernel,
		"/slot-a/initramfs.img": spec.Initrd}
	for p, h := range spec.Files {
		files[path.Clean("/"+p)] = h
	}
	var payload, slot int64
	for p, h := range files {
		st, err := os.Stat(h)
		if err != nil {
			return fmt.Errorf("boot disk file %s: %w", p, err)
		}
		payload += st.Size()
		if strings.HasPrefix(p, "/slot-a/") {
			slot += st.Size()
		}
	}
	manifest, err := manifestOf(spec.Initrd)
	if err != nil {
		return fmt.Errorf("boot disk: %w", err)
	}
	// Room for the second slot and for one upload beside it (a slot's files are received
	// under other names before the old ones go), with a quarter to spare.
	espSize := max(int64(minESPSize), ((payload+2*slot)*5/4+(16<<20))&^(1<<20-1))
	diskSize := espSize + (firstLBA+34)*sector*2
	_ = os.Remove(out)
	// Reproducible FAT timestamps (go-diskfs follows SOURCE_DATE_EPOCH).
	os.Setenv("SOURCE_DATE_EPOCH", "0")
	d, err := diskfs.Create(out, diskSize, diskfs.SectorSizeDefault)
	if err != nil {
		return fmt.Errorf("boot disk %s: %w", out, err)
	}
	defer d.Close()
	table := &gpt.Table{
		GUID:          "5B1A1D2E-0000-4A7B-9C5D-626174306F6E",
		ProtectiveMBR: true,
		Partitions: []*gpt.Partition{{Index: 1, Start: firstLBA, End: firstLBA + uint64(espSize/sector) - 1,
			Type: gpt.EFISystemPartition, Name: spec.Label, GUID: "5B1A1D2E-0001-4A7B-9C5D-626174306F6E"}},
	}
	if err := d.Partition(table); err != nil {
		return fmt.Errorf("boot disk %s: partition: %w", out, err)
	}
	fs, err := d.CreateFilesystem(disk.FilesystemSpec{Partition: 1, FSType: filesystem.TypeFat32, VolumeLabel: spec.Label, Reproducible: true})
	if err != nil {
		return fmt.Errorf("boot disk %s: FAT32: %w", out, err)
	}
	loader := "timeout 0\ndefault baton-a.conf\n"
	if err := writeFS(fs, "/loader/loader.conf", strings.NewReader(loader)); err != nil {
		return err
	}
	if err := writeFS(fs, "/loader/entries/baton-a.conf", strings.NewReader(imagefmt.LoaderEntry("a", spec.Cmdline))); err != nil {
		return err
	}
	if err := writeFS(fs, "/slot-a/manifest.json", bytes.NewReader(manifest)); err != nil {
		return err
	}
	paths := make([]string, 0, len(files))
	for p := range files {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	for _, p := range paths {
		f, err := os.Open(files[p])
		if err != nil {
			return err
		}
		err = writeFS(fs, p, f)
		f.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

// manifestOf returns the manifest of the initramfs at path, as a slot keeps it.
func manifestOf(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	m, err := imagefmt.ReadManifest(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return json.MarshalIndent(m, "", " ")
}

func writeFS(fs filesystem.FileSystem, p string, r io.Reader) error {
	if dir := path.Dir(p); dir != "/" {
		if err := fs.Mkdir(dir); err != nil {
			return fmt.Errorf("boot disk: mkdir %s: %w", dir, err)
		}
	}
	w, err := fs.OpenFile(p, os.O_CREATE|os.O_RDWR)
	if err != nil {
		return fmt.Errorf("boot disk: %s: %w", p, err)
	}
	if _, err := io.Copy(w, r); err != nil {
		return fmt.Errorf("boot disk: write %s: %w", p, err)
	}
	return w.Close()
}
