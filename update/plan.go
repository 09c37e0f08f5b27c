package update

import (
	"fmt"
	"reflect"
	"sort"
	"strings"

	"github.com/baton-init/baton/config"
	"github.com/baton-init/baton/images/imagefmt"
	"github.com/baton-init/baton/services"
)

// How an update is applied.
const (
	PathNothing = "nothing" // the same image
	PathInPlace = "in-place"
	PathKexec   = "kexec"
)

// Plan is how a running appliance becomes a new image, and why that way.
type Plan struct {
	From    string   `json:"from"`
	To      string   `json:"to"`
	Path    string   `json:"path"`
	Why     []string `json:"why,omitempty"`     // what needs the kexec path
	Changed []string `json:"changed,omitempty"` // files added, removed or changed
	// Services: what the in-place path does to each (or, on the kexec path, what differs).
	Services services.ReloadReport `json:"services"`
	// Binaries are the service binaries taken from the new image (image path → where it is
	// extracted, outside the running root).
	Binaries map[string]string `json:"binaries,omitempty"`
}

// makePlan compares the running image with a new one. Only service binaries and [[service]]
// settings can change in place; anything else the running kernel or PID 1 already read (the
// kernel, modules, the init binary, hostname, network, [control], other packed files) takes a
// kexec into the new slot.
//
// run is the image running now (after earlier in-place updates, its services' binaries are
// not the root file system's), boot the one the root file system was unpacked from.
func makePlan(run, boot, next imagefmt.Manifest, runKernel, nextKernel string, runCfg, nextCfg *config.Config,
	sv *services.Supervisor, extractDir string) Plan {
	p := Plan{From: run.ImageID, To: next.ImageID, Path: PathInPlace, Binaries: map[string]string{}}
	if run.ImageID == next.ImageID && runKernel == nextKernel {
		p.Path = PathNothing
		return p
	}
	if runKernel != nextKernel {
		p.Why = append(p.Why, "the kernel changed")
	}
	serviceBins := map[string]bool{}
	for _, s := range nextCfg.Service {
		serviceBins[s.Exec[0]] = true
	}
	paths := map[string]bool{}
	for f := range run.Files {
		paths[f] = true
	}
	for f := range next.Files {
		paths[f] = true
	}
	var sorted []string
	for f := range paths {
		sorted = append(sorted, f)
	}
	sort.Strings(sorted)
	modules := false
	for _, f := range sorted {
		if run.Files[f] == next.Files[f] || f == imagefmt.ManifestPath {
			continue
		}
		p.Changed = append(p.Changed, f)
		switch {
		case f == config.DefaultPath:
			// Decided below, by what changed in it.
		case serviceBins[f] && next.Files[f] != "":
			// Decided below, against the root file system.
		case f == "/init":
			p.Why = append(p.Why, "the init binary changed (PID 1 is replaced by a kexec until it can re-execute itself)")
		case strings.HasPrefix(f, "/lib/modules/"):
			modules = true
		default:
			p.Why = append(p.Why, "packed file "+f+" changed")
		}
	}
	// A service binary the root file system does not hold as the new image has it runs from
	// a copy extracted outside it, in a directory named by its digest (the same binary of two
	// updates is one copy, at one path).
	for bin := range serviceBins {
		if d := next.Files[bin]; d != "" && d != boot.Files[bin] {
			p.Binaries[bin] = extractDir + "/" + strings.TrimPrefix(d, "sha256:")[:16] + bin
		}
	}
	if modules {
		p.Why = append(p.Why, "the kernel modules changed")
	}
	if !reflect.DeepEqual(machinePart(runCfg), machinePart(nextCfg)) {
		p.Why = append(p.Why, "the config's machine settings changed (hostname, [boot], [[network]], [[mount]], [control], [kexec] or [update])")
	}
	if len(p.Why) > 0 {
		p.Path = PathKexec
		if len(p.Why) > 8 {
			p.Why = append(p.Why[:8], fmt.Sprintf("… and %d more", len(p.Why)-8))
		}
	}
	p.Services = sv.Preview(inPlaceConfig(nextCfg, p.Binaries))
	return p
}

// machinePart is the config without its services: what PID 1 applies at boot only.
func machinePart(c *config.Config) config.Config {
	m := *c
	m.Service = nil
	return m
}

// inPlaceConfig is the new config with each changed binary run from where it was extracted.
func inPlaceConfig(c *config.Config, bins map[string]string) *config.Config {
	out := *c
	out.Service = make([]config.Service, len(c.Service))
	for i, s := range c.Service {
		if at, ok := bins[s.Exec[0]]; ok {
			s.Exec = append([]string{at}, s.Exec[1:]...)
		}
		out.Service[i] = s
	}
	return &out
}
