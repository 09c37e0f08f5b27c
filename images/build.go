package images

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path"
	"path/filepath"
	"sort"

	"github.com/baton-init/baton/config"
	"github.com/baton-init/baton/control"
	"github.com/baton-init/baton/handoff/execshim"
	"github.com/baton-init/baton/system/kmod"
)

// Spec says what goes into an appliance image.
type Spec struct {
	Config string // host path of baton.toml; validated, stored at /etc/baton/baton.toml
	Init   string // host path of the static init binary
	// Shim is the host path of the small exec shim (cmd/baton-exec), put at execshim.Path;
	// empty: the baton-exec beside Init, if there is one (else the services start through the
	// init binary, which does the same more slowly).
	Shim string
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
	// HostPasswd and HostGroup are where the ids of the users and groups the config names
	// are looked up (default /etc/passwd and /etc/group of the build host).
	HostPasswd, HostGroup string
}

// Build assembles the image described by spec. Every missing input is an error that names it.
// What went in, and for whom, is in the image's Report.
func Build(spec Spec) (*Initramfs, []*ModuleSet, error) {
	cfg, err := config.Load(spec.Config)
	if err != nil {
		return nil, nil, err
	}
	img := NewInitramfs()
	p := &packer{img: img, report: newReport()}
	img.Report = p.report
	base := p.report.group("baton")
	if err := p.hostFile(base, "/init", spec.Init, "init", 0o755); err != nil {
		return nil, nil, fmt.Errorf("init binary: %w", err)
	}
	if kind, _ := inspect(spec.Init); kind == kindDynamic {
		// The kernel would say only "Failed to execute /init (error -2)" and panic.
		return nil, nil, fmt.Errorf("/init (%s) is dynamically linked: PID 1 must be a static executable (Go: CGO_ENABLED=0)", spec.Init)
	}
	shim := spec.Shim
	if shim == "" {
		if beside := filepath.Join(filepath.Dir(spec.Init), "baton-exec"); fileExists(beside) {
			shim = beside
		}
	}
	if shim != "" {
		if err := p.hostFile(base, execshim.Path, shim, "exec shim", 0o755); err != nil {
			return nil, nil, fmt.Errorf("exec shim: %w", err)
		}
		if kind, _ := inspect(shim); kind == kindDynamic {
			return nil, nil, fmt.Errorf("exec shim %s is dynamically linked: build it with CGO_ENABLED=0", shim)
		}
	}
	// The kernel's module helper (request_module() runs /sbin/modprobe) and the CLI are baton.
	img.AddSymlink("/sbin/modprobe", "/init")
	img.AddSymlink("/bin/initctl", "/init")
	if err := p.hostFile(base, config.DefaultPath, spec.Config, "config", 0o644); err != nil {
		return nil, nil, err
	}
	guests := make([]string, 0, len(spec.Files))
	for g := range spec.Files {
		guests = append(guests, g)
	}
	sort.Strings(guests)
	for _, g := range guests {
		if err := p.hostFile(base, g, spec.Files[g], "file", 0o755); err != nil {
			return nil, nil, err
		}
	}
	configDir := filepath.Dir(spec.Config)
	for _, s := range cfg.Service {
		g := p.report.group("service " + s.Name)
		for _, f := range s.Files {
			if err := p.files(g, f, configDir); err != nil {
				return nil, nil, fmt.Errorf("service %s: %w", s.Name, err)
			}
		}
		if err := p.serviceBinary(g, s, spec.BinDir); err != nil {
			return nil, nil, fmt.Errorf("service %s: %w", s.Name, err)
		}
	}
	if err := addAccounts(p, base, cfg, spec); err != nil {
		return nil, nil, err
	}
	if cfg.Control.Remote != "" {
		if err := addTLS(p, base, cfg, spec.TLSDir); err != nil {
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
		if err := set.addTo(p); err != nil {
			return nil, nil, err
		}
		sets = append(sets, set)
	}
	if len(spec.KernelModules) == 0 && len(names) > 0 {
		return nil, nil, fmt.Errorf("the config lists kernel modules (%v) but no kernel module tree was given", names)
	}
	return img, sets, nil
}

// addAccounts writes /etc/passwd and /etc/group with the users and groups the config names,
// unless the config packs its own.
func addAccounts(p *packer, g *Group, cfg *config.Config, spec Spec) error {
	a := newAccounts()
	passwd, group := spec.HostPasswd, spec.HostGroup
	if passwd == "" {
		passwd = "/etc/passwd"
	}
	if group == "" {
		group = "/etc/group"
	}
	if err := a.fill(cfg, passwd, group); err != nil {
		return fmt.Errorf("users and groups: %w", err)
	}
	for _, db := range []struct {
		path string
		data []byte
	}{{"/etc/passwd", a.passwd()}, {"/etc/group", a.group()}} {
		if !p.img.Has(db.path) {
			p.img.AddData(db.path, db.data, 0o644)
			p.report.add(g, Item{Path: db.path, Kind: "accounts", Size: int64(len(db.data))})
		}
	}
	return nil
}

func (s *ModuleSet) addTo(p *packer) error {
	img := p.img
	base := path.Join("/lib/modules", s.Index.Release)
	set := Item{Path: base, Kind: "kernel modules"}
	for _, name := range s.Names() {
		m := s.Index.Modules[name]
		if err := img.AddFile(path.Join(base, filepath.ToSlash(m.Path)), filepath.Join(s.Dir, m.Path), 0o644); err != nil {
			return err
		}
		set.Files++
		set.Size += img.size(path.Join(base, filepath.ToSlash(m.Path)))
	}
	p.report.add(p.report.group("modules"), set)
	ix, err := json.MarshalIndent(s.Index, "", " ")
	if err != nil {
		return err
	}
	img.AddData(path.Join(base, kmod.IndexFile), ix, 0o644)
	return nil
}

// addTLS puts the server's half of the remote API's TLS material in the image, making it in
// tlsDir first if it is not there.
func addTLS(p *packer, g *Group, cfg *config.Config, tlsDir string) error {
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
		if err := p.hostFile(g, path.Join(cfg.Control.TLSDir, f), filepath.Join(tlsDir, f), "tls", 0o600); err != nil {
			return err
		}
	}
	return nil
}

// fileExists reports a regular file at path.
func fileExists(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular()
}
