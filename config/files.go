package config

import (
	"fmt"
	"path"
	"strings"
)

// File is a file or directory of the build host that the image builder packs with a service
// (its config, its static content). In the config it is written
//
//	"/etc/nginx/nginx.conf"             the host's file (or directory) at the same path
//	"html:/srv/www"                     SRC:DST, split at the first ':'; DST is absolute
//	{ src = "a:b.conf", dst = "/etc/x" } the table form, for a path that contains ':'
//
// A relative SRC is taken from the config file's directory, so a config and the files it
// names can live together outside any repository.
type File struct {
	Src string `toml:"src"`
	Dst string `toml:"dst"`
}

// UnmarshalText reads the string forms, PATH and SRC:DST; tables decode into the fields.
func (f *File) UnmarshalText(b []byte) error {
	s := string(b)
	if src, dst, ok := strings.Cut(s, ":"); ok {
		f.Src, f.Dst = src, dst
		return nil
	}
	f.Src, f.Dst = s, s
	return nil
}

// Directory settings: names under these bases, made before the service starts and owned by
// its user (systemd's StateDirectory=, RuntimeDirectory=, LogsDirectory=).
const (
	StateBase   = "/var/lib"
	RuntimeBase = "/run"
	LogsBase    = "/var/log"
)

// Dirs returns the service's state, runtime and logs directories as absolute paths, in that
// order, leaving out those not set.
func (s Service) Dirs() []string {
	var out []string
	for _, d := range []struct{ base, name string }{{StateBase, s.StateDir}, {RuntimeBase, s.RuntimeDir}, {LogsBase, s.LogsDir}} {
		if d.name != "" {
			out = append(out, path.Join(d.base, d.name))
		}
	}
	return out
}

// validateFiles checks a service's files and directory settings; k is its key path.
func validateFiles(k string, s Service) []problem {
	var ps []problem
	add := func(key, format string, args ...any) {
		ps = append(ps, problem{key: key, msg: fmt.Sprintf("service %q: ", s.Name) + fmt.Sprintf(format, args...)})
	}
	for _, f := range s.Files {
		switch {
		case f.Src == "" || f.Dst == "":
			add(k+".files", "%q: want PATH, \"SRC:DST\" or { src = …, dst = … }", f.Src+":"+f.Dst)
		case !path.IsAbs(f.Dst):
			add(k+".files", "%q: the image path must be absolute", f.Dst)
		case path.Clean(f.Dst) == "/":
			add(k+".files", "%q: cannot replace the image's root", f.Dst)
		}
	}
	for _, d := range []struct{ key, name string }{{"state_dir", s.StateDir}, {"runtime_dir", s.RuntimeDir}, {"logs_dir", s.LogsDir}} {
		if d.name == "" {
			continue
		}
		if path.IsAbs(d.name) || path.Clean(d.name) != d.name || d.name == "." || d.name == ".." || strings.HasPrefix(d.name, "../") {
			add(k+"."+d.key, "%q: give a directory name relative to its base (e.g. \"nginx\" for /var/lib/nginx)", d.name)
		}
	}
	return ps
}
