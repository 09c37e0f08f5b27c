// Command mkimage builds a baton appliance initramfs.
//
//	mkimage -config examples/baton.toml -init out/bin/init -bindir out/bin \
//	        -kernel-modules out/kernel/amd64/lib/modules -o out/initramfs.img
//
// Each service's program (exec[0]) comes from -file, the service's files, -bindir (by base
// name) or the build host's same path, with its ELF interpreter and shared libraries (or a
// script's interpreter); it prints what it packed, grouped by service, with sizes.
package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/baton-init/baton/handoff/execshim"
	"github.com/baton-init/baton/images"
	"github.com/baton-init/baton/images/imagefmt"
)

type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

func main() {
	var spec images.Spec
	var files, kmods, modules, carry listFlag
	flag.StringVar(&spec.Config, "config", "", "baton.toml to put in the image (required)")
	flag.StringVar(&spec.Init, "init", "", "static init binary (required)")
	flag.StringVar(&spec.Shim, "shim", "", "static exec shim (cmd/baton-exec), put at "+execshim.Path+" (default: the baton-exec beside -init, if any)")
	flag.StringVar(&spec.BinDir, "bindir", "", "directory searched by base name for service binaries (then the host's own path)")
	flag.Var(&files, "file", "GUEST=HOST: add a host file at an image path (repeatable)")
	flag.Var(&kmods, "kernel-modules", "lib/modules/<release> tree of a kernel the image boots (repeatable)")
	flag.Var(&modules, "modules", "extra modules to carry and load, comma-separated (repeatable)")
	flag.Var(&carry, "carry", "modules to carry but load only on the kernel's request, comma-separated (repeatable)")
	flag.StringVar(&spec.TLSDir, "tls-dir", "out/tls", "remote API TLS material: reused if there, else made there")
	diskOut := flag.String("disk", "", "also write a UEFI boot disk (GPT, FAT32 ESP, systemd-boot) here")
	bootloader := flag.String("bootloader", "/usr/lib/systemd/boot/efi/systemd-bootx64.efi", "EFI boot loader for -disk")
	kernel := flag.String("kernel", "", "kernel for -disk (/slot-a/vmlinuz on the ESP), recorded in the manifest")
	cmdline := flag.String("cmdline", "console=ttyS0", "kernel command line of the disk's loader entry")
	var diskFiles listFlag
	flag.Var(&diskFiles, "disk-file", "ESPPATH=HOST: another file on the ESP, e.g. /vmlinuz-cloud=… (repeatable)")
	compression := flag.String("compress", "zstd", "compression: "+strings.Join(images.Compressions, ", "))
	out := flag.String("o", "out/initramfs.img", "output file")
	signKey := flag.String("sign", "", "sign the image's manifest with this key (made by -gen-key)")
	genKey := flag.String("gen-key", "", "write a new signing key to PREFIX.key, print its public half, and exit")
	flag.Parse()
	if *genKey != "" {
		pub, err := imagefmt.GenerateKey(*genKey)
		if err != nil {
			fatal(err)
		}
		fmt.Printf("mkimage: wrote %s.key (keep it secret); the appliance's config trusts it with:\n[update]\ntrusted_keys = [%q]\n", *genKey, pub)
		return
	}
	if spec.Config == "" || spec.Init == "" {
		fmt.Fprintln(os.Stderr, "mkimage: -config and -init are required")
		flag.Usage()
		os.Exit(2)
	}
	spec.Files = map[string]string{}
	for _, f := range files {
		g, h, ok := strings.Cut(f, "=")
		if !ok || g == "" || h == "" {
			fatal(fmt.Errorf("-file %q: want GUEST=HOST", f))
		}
		spec.Files[g] = h
	}
	spec.KernelModules = kmods
	for _, m := range modules {
		spec.Modules = append(spec.Modules, strings.Split(m, ",")...)
	}
	for _, m := range carry {
		spec.Carry = append(spec.Carry, strings.Split(m, ",")...)
	}
	img, sets, err := images.Build(spec)
	if err != nil {
		fatal(err)
	}
	// Last: it describes what is in the archive (initctl update compares it with the running one).
	manifest, err := img.AddManifest(*kernel)
	if err != nil {
		fatal(err)
	}
	if *signKey != "" {
		priv, err := imagefmt.ReadSigningKey(*signKey)
		if err == nil {
			err = img.Sign(priv)
		}
		if err != nil {
			fatal(err)
		}
	}
	var buf bytes.Buffer
	if err := img.Write(&buf, *compression); err != nil {
		fatal(err)
	}
	// Write to a temporary file and rename, so a failed build never leaves a truncated image.
	if err := os.WriteFile(*out+".tmp", buf.Bytes(), 0o644); err != nil {
		fatal(err)
	}
	if err := os.Rename(*out+".tmp", *out); err != nil {
		fatal(err)
	}
	fmt.Println("mkimage: packed, by who needs it (sizes before compression):")
	img.Report.Print(os.Stdout)
	for _, s := range sets {
		fmt.Printf("mkimage: kernel %s: %d modules: %s\n", s.Index.Release, len(s.Index.Modules), strings.Join(s.Names(), " "))
	}
	fmt.Printf("mkimage: image %s (%s)\n", manifest.ImageID, imagefmt.ManifestPath)
	fmt.Printf("mkimage: wrote %s: %d entries, %.1f MiB of files, %.1f MiB compressed (%s, %d bytes)\n", *out, len(img.Paths()),
		float64(img.Report.Total())/(1<<20), float64(buf.Len())/(1<<20), *compression, buf.Len())
	if *diskOut == "" {
		return
	}
	if *kernel == "" {
		fatal(fmt.Errorf("-disk needs -kernel"))
	}
	ds := images.DiskSpec{Bootloader: *bootloader, Kernel: *kernel, Initrd: *out, Cmdline: *cmdline, Files: map[string]string{}}
	for _, f := range diskFiles {
		g, h, ok := strings.Cut(f, "=")
		if !ok {
			fatal(fmt.Errorf("-disk-file %q: want ESPPATH=HOST", f))
		}
		ds.Files[g] = h
	}
	if err := images.BuildDisk(*diskOut, ds); err != nil {
		fatal(err)
	}
	st, _ := os.Stat(*diskOut)
	fmt.Printf("mkimage: wrote %s: %d MiB, GPT + FAT32 ESP (label BOOT) with systemd-boot, slot a: /slot-a/vmlinuz, /slot-a/initramfs.img\n", *diskOut, st.Size()>>20)
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "mkimage:", err)
	os.Exit(1)
}
