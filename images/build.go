package images

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"path"
	"path/filepath"
	"sort"

	"github.com/baton-init/baton/config"
	"github.com/baton-init/baton/control"
	"github.com/baton-init/baton/system/kmod"
)

// Spec says what goes into an appliance image.
type Spec struct {
	Config string // host path of baton.toml; validated, stored at /etc/baton/baton.toml
	Init   string // host path of the static init binary
	// BinDir is searched (by base name) for service binaries not given in Files.
	BinDir string
	// Files maps image paths to host files: extra files, or service binaries by exact path.
	Files map[string]string
	// KernelModules are lib/modules/<release> trees, one per kernel the image boots.
	KernelModules []string
	// Modules are loaded at boot in addition to the config's [boot] modules.
	Modules []string
	// Carry are modules put in the image but loaded only when the kernel asks for them
	// (request_module → /sbin/modprobe), e.g. file systems mounted later.
	Carry []string
	// TLSDir holds (or receives, when empty) the remote API's CA and certificates; used when
	// the config enables [control] remote. The client's half stays there.
	TLSDir string
}

// Minimal account databases, so that user = "nobody" resolves; a config can ship its own with
// -file /etc/passwd=… .
const (
	defaultPasswd = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
	defaultGroup  = "root:x:0:\nnogroup:x:65534:\n"
)

// Build assembles the image described by spec. Every missing input is an error that names it.
func Build(spec Spec) (*Initramfs, []*ModuleSet, error) {
	cfg, err := config.Load(spec.Config)
	if err != nil {
		return nil, nil, err
	}
	img := NewInitramfs()
	if err := img.AddFile("/init", spec.Init, 0o755); err != nil {
		return nil, nil, fmt.Errorf("init binary: %w", err)
	}
	// The kernel's module helper (request_module() runs /sbin/modprobe) and the CLI are baton.
	img.AddSymlink("/sbin/modprobe", "/init")
	img.AddSymlink("/bin/initctl", "/init")
	img.AddData("/etc/passwd", []byte(defaultPasswd), 0o644)
	img.AddData("/etc/group", []byte(defaultGroup), 0o644)
	if err := img.AddFile(config.DefaultPath, spec.Config, 0o644); err != nil {
		return nil, nil, err
	}
	guests := make([]string, 0, len(spec.Files))
	for g := range spec.Files {
		guests = append(guests, g)
	}
	sort.Strings(guests)
	for _, g := range guests {
		if err := img.AddFile(g, spec.Files[g], 0o755); err != nil {
			return nil, nil, err
		}
	}
	if err := img.checkRunnable("/init", spec.Init); err != nil {
		return nil, nil, err
	}
	for _, s := range cfg.Service {
		bin := s.Exec[0]
		if img.Has(bin) {
			if err := img.checkRunnable(bin, img.sources[path.Clean(bin)]); err != nil {
				return nil, nil, fmt.Errorf("service %s: %w", s.Name, err)
			}
			continue
		}
		if spec.BinDir == "" {
			return nil, nil, fmt.Errorf("service %s: no binary for %s (give -file %s=PATH or -bindir DIR)", s.Name, bin, bin)
		}
		host := filepath.Join(spec.BinDir, path.Base(bin))
		if err := img.AddFile(bin, host, 0o755); err != nil {
			return nil, nil, fmt.Errorf("service %s: %w", s.Name, err)
		}
		if err := img.checkRunnable(bin, host); err != nil {
			return nil, nil, fmt.Errorf("service %s: %w", s.Name, err)
		}
	}
	if cfg.Control.Remote != "" {
		if err := addTLS(img, cfg, spec.TLSDir); err != nil {
			return nil, nil, err
		}
	}
	names := append(append([]string(nil), cfg.Boot.Modules...), spec.Modules...)
	var sets []*ModuleSet
	for _, dir := range spec.KernelModules {
		set, err := ResolveModules(dir, append(append([]string(nil), names...), spec.Carry...))
		if err != nil {
			return nil, nil, err
		}
		if err := set.addTo(img); err != nil {
			return nil, nil, err
		}
		sets = append(sets, set)
	}
	if len(spec.KernelModules) == 0 && len(names) > 0 {
		return nil, nil, fmt.Errorf("the config lists kernel modules (%v) but no kernel module tree was given", names)
	}
	return img, sets, nil
}

func (s *ModuleSet) addTo(img *Initramfs) error {
	base := path.Join("/lib/modules", s.Index.Release)
	for _, name := range s.Names() {
		m := s.Index.Modules[name]
		if err := img.AddFile(path.Join(base, filepath.ToSlash(m.Path)), filepath.Join(s.Dir, m.Path), 0o644); err != nil {
			return err
		}
	}
	ix, err := json.MarshalIndent(s.Index, "", " ")
	if err != nil {
		return err
	}
	img.AddData(path.Join(base, kmod.IndexFile), ix, 0o644)
	return nil
}

// addTLS puts the server's half of the remote API's TLS material in the image, making it in
// tlsDir first if it is not there.
func addTLS(img *Initramfs, cfg *config.Config, tlsDir string) error {
	if tlsDir == "" {
		return fmt.Errorf("[control] remote is set but no TLS directory was given (-tls-dir)")
	}
	hosts := []string{"127.0.0.1", "::1", "localhost"}
	if cfg.Hostname != "" {
		hosts = append(hosts, cfg.Hostname)
	}
	for _, n := range cfg.Network {
		if p, err := netip.ParsePrefix(n.Address); err == nil {
			hosts = append(hosts, p.Addr().String())
		}
	}
	if err := control.GenerateTLS(tlsDir, hosts); err != nil {
		return fmt.Errorf("tls material in %s: %w", tlsDir, err)
	}
	for _, f := range []string{control.CAFile, control.ServerFile, control.ServerKeyFile} {
		if err := img.AddFile(path.Join(cfg.Control.TLSDir, f), filepath.Join(tlsDir, f), 0o600); err != nil {
			return err
		}
	}
	return nil
}
