package system

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// FindDevice resolves a mount source: a /dev path as is, LABEL= by the file system's label
// (vfat, ext2/3/4), PARTLABEL= by the GPT partition name the kernel reports (PARTNAME). It waits
// up to wait for the device to appear, since disk drivers probe after their module loads.
//
// Written here because u-root's block package reads UUIDs and partition labels but not file
// system labels, and there is no udev to make /dev/disk/by-label.
func FindDevice(source string, wait time.Duration) (string, error) {
	deadline := time.Now().Add(wait)
	for {
		dev, err := findDevice(source)
		if err == nil {
			return dev, nil
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("%s: %w after waiting %s — is the disk attached and its driver (e.g. virtio_blk) in [boot] modules?", source, err, wait)
		}
		// Polling: without udev there is no event to wait for a block device on.
		time.Sleep(20 * time.Millisecond)
	}
}

func findDevice(source string) (string, error) {
	kind, want, _ := strings.Cut(source, "=")
	if strings.HasPrefix(source, "/") {
		if _, err := os.Stat(source); err != nil {
			return "", err
		}
		return source, nil
	}
	blocks, _ := filepath.Glob("/sys/class/block/*")
	for _, b := range blocks {
		name := filepath.Base(b)
		var got string
		switch kind {
		case "PARTLABEL":
			got = ueventField(filepath.Join(b, "uevent"), "PARTNAME")
		case "LABEL":
			got = fsLabel("/dev/" + name)
		}
		if got != "" && got == want {
			return "/dev/" + name, nil
		}
	}
	return "", fmt.Errorf("no block device with %s", source)
}

func ueventField(path, key string) string {
	b, _ := os.ReadFile(path)
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, "="); ok && k == key {
			return v
		}
	}
	return ""
}

// fsLabel reads a vfat or ext2/3/4 volume label from a device, or "".
func fsLabel(dev string) string {
	f, err := os.Open(dev)
	if err != nil {
		return ""
	}
	defer f.Close()
	buf := make([]byte, 2048)
	if n, _ := f.ReadAt(buf, 0); n < len(buf) {
		return ""
	}
	return labelFromSuperblock(buf)
}

// labelFromSuperblock finds the label in a device's first 2 KiB.
func labelFromSuperblock(buf []byte) string {
	clean := func(b []byte) string { return strings.TrimRight(string(bytes.TrimRight(b, "\x00")), " ") }
	switch {
	case buf[1024+56] == 0x53 && buf[1024+57] == 0xEF: // ext2/3/4 magic 0xEF53
		return clean(buf[1024+120 : 1024+136])
	case bytes.Equal(buf[82:90], []byte("FAT32   ")) && buf[66] == 0x29: // FAT32 extended boot signature
		return noName(clean(buf[71:82]))
	case bytes.HasPrefix(buf[54:62], []byte("FAT")) && buf[38] == 0x29: // FAT12/16
		return noName(clean(buf[43:54]))
	}
	return ""
}

func noName(l string) string {
	if l == "NO NAME" {
		return ""
	}
	return l
}
