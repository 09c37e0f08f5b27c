package seedref

import (
	"embed"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/baton-init/baton/images"
)

// rootfs holds the appliance's own files: busybox init's inittab, the boot script (rcS), the
// script that waits for the kexec request, and the web page.
//
//go:embed rootfs
var rootfs embed.FS

// Applets are the busybox programs the scripts run, linked in /bin (and init as /init).
var Applets = []string{"sh", "mount", "insmod", "ip", "httpd", "nc", "killall", "cat", "echo", "sleep", "uname", "dmesg"}

// Modules are what the appliance loads at boot, as the demo appliance does: the network card,
// the disk holding /boot and its file system, with their dependencies and vfat's codepage
// (images.ResolveModules adds it). Debian's kernel mounts FAT with iocharset ascii by default
// (the demo image carries nls_ascii for the same reason).
var Modules = []string{"virtio_net", "virtio_blk", "vfat", "nls_ascii"}

// Spec says where the parts come from.
type Spec struct {
	Root        string // Fetch's unpacked packages
	Modules     string // the kernel's lib/modules tree (lib/modules or lib/modules/<release>)
	Compression string // as images.Initramfs.Write: zstd (the demo's), gzip, none
}

// Kexec is the path of kexec-tools' program in the image, and KernelPath and InitrdPath where
// the boot disk (BuildDisk, mounted at /boot) has the kernel and the image it loads.
const (
	Kexec      = "/sbin/kexec"
	KernelPath = "/boot/vmlinuz"
	InitrdPath = "/boot/initrd.img"
)

// BuildInitramfs writes the reference appliance's initramfs to out.
func BuildInitramfs(spec Spec, out string) error {
	img := images.NewInitramfs()
	img.AddDir("/boot", 0o755)
	if err := img.AddFile("/bin/busybox", filepath.Join(spec.Root, "bin/busybox"), 0o755); err != nil {
		return fmt.Errorf("busybox (package busybox-static): %w", err)
	}
	img.AddSymlink("/init", "/bin/busybox")
	img.AddSymlink("/sbin/init", "/bin/busybox")
	for _, a := range Applets {
		img.AddSymlink("/bin/"+a, "busybox")
	}
	if err := addProgram(img, spec.Root, Kexec); err != nil {
		return fmt.Errorf("kexec-tools: %w", err)
	}
	if err := addOwnFiles(img); err != nil {
		return err
	}
	if err := addModules(img, spec.Modules); err != nil {
		return err
	}
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	if err := img.Write(f, spec.Compression); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", out, err)
	}
	return f.Close()
}

// addProgram packs the program at prog inside root with its interpreter and libraries, each at
// its own path, symbolic links (libfoo.so.1 → libfoo.so.1.2.3) as links.
func addProgram(img *images.Initramfs, root, prog string) error {
	if err := img.AddFile(prog, filepath.Join(root, prog), 0o755); err != nil {
		return err
	}
	libs, err := needed(root, prog)
	if err != nil {
		return err
	}
	for _, l := range libs {
		if err := addChain(img, root, l); err != nil {
			return err
		}
	}
	return nil
}

// addChain packs p inside root: a link as a link plus what it points to.
func addChain(img *images.Initramfs, root, p string) error {
	for hops := 0; hops < 40; hops++ {
		host := filepath.Join(root, p)
		st, err := os.Lstat(host)
		if err != nil {
			return err
		}
		if st.Mode()&os.ModeSymlink == 0 {
			return img.AddFile(p, host, uint64(st.Mode().Perm()))
		}
		target, err := os.Readlink(host)
		if err != nil {
			return err
		}
		img.AddSymlink(p, target)
		if !path.IsAbs(target) {
			target = path.Join(path.Dir(p), target)
		}
		p = target
	}
	return fmt.Errorf("%s: too many levels of symbolic links", p)
}

func addOwnFiles(img *images.Initramfs) error {
	return fs.WalkDir(rootfs, "rootfs", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := rootfs.ReadFile(p)
		if err != nil {
			return err
		}
		guest := strings.TrimPrefix(p, "rootfs")
		perm := uint64(0o644)
		if strings.HasPrefix(guest, "/etc/init.d/") {
			perm = 0o755
		}
		img.AddData(guest, data, perm)
		return nil
	})
}

// addModules packs Modules with their dependencies and writes /etc/modules, the .ko paths in
// load order, for rcS to insmod one by one.
func addModules(img *images.Initramfs, dir string) error {
	set, err := images.ResolveModules(dir, Modules)
	if err != nil {
		return err
	}
	// All of the set, not only Modules' dependencies: virtio_pci, the transport without which
	// no virtio device appears, is nobody's declared dependency (images.ResolveModules adds it).
	order, err := set.Index.Order(set.Names()...)
	if err != nil {
		return err
	}
	base := path.Join("/lib/modules", set.Index.Release)
	var list strings.Builder
	for _, name := range order {
		m := set.Index.Modules[name]
		guest := path.Join(base, filepath.ToSlash(m.Path))
		if err := img.AddFile(guest, filepath.Join(set.Dir, m.Path), 0o644); err != nil {
			return err
		}
		list.WriteString(guest + "\n")
	}
	img.AddData("/etc/modules", []byte(list.String()), 0o644)
	return nil
}
