package services

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/baton-init/baton/config"
	"github.com/baton-init/baton/handoff/execshim"
)

// readEnvFiles reads environment_file as systemd reads EnvironmentFile=: KEY=value lines,
// blank lines and lines starting with # or ; ignored, a value in single or double quotes
// unquoted. A path with a "-" prefix may be missing.
func readEnvFiles(spec *config.Service) ([]string, error) {
	var out []string
	for _, f := range spec.EnvironmentFile {
		path, optional := strings.CutPrefix(f, "-")
		file, err := os.Open(path)
		if optional && errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("environment_file: %w", err)
		}
		sc := bufio.NewScanner(file)
		for n := 1; sc.Scan(); n++ {
			line := strings.TrimSpace(sc.Text())
			if line == "" || line[0] == '#' || line[0] == ';' {
				continue
			}
			k, v, ok := strings.Cut(line, "=")
			k, v = strings.TrimSpace(strings.TrimPrefix(k, "export ")), strings.TrimSpace(v)
			if !ok || k == "" || strings.ContainsAny(k, " \t") {
				file.Close()
				return nil, fmt.Errorf("environment_file %s:%d: not KEY=value", path, n)
			}
			if len(v) >= 2 && (v[0] == '"' || v[0] == '\'') && v[len(v)-1] == v[0] {
				v = v[1 : len(v)-1]
			}
			out = append(out, k+"="+v)
		}
		err = sc.Err()
		file.Close()
		if err != nil {
			return nil, fmt.Errorf("environment_file %s: %w", path, err)
		}
	}
	return out, nil
}

// mergeEnv keeps one entry per name, the last one given: a program's getenv returns the
// first, so a duplicate would silently keep baton's PATH over the config's.
func mergeEnv(env []string) []string {
	at := map[string]int{}
	out := env[:0:0]
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		if i, ok := at[k]; ok {
			out[i] = kv
			continue
		}
		at[k] = len(out)
		out = append(out, kv)
	}
	return out
}

// shimEnv is what the baton-exec shim applies between fork and exec (handoff/execsetup.go);
// with cred, the shim switches the user itself, after the limits.
func shimEnv(spec *config.Service, id identity) []string {
	var env []string
	if spec.UMask != "" {
		env = append(env, execshim.EnvExecUmask+"="+spec.UMask)
	}
	if spec.NoNewPrivileges {
		env = append(env, execshim.EnvExecNNP+"=1")
	}
	for name, v := range spec.Limits() {
		if l, ok, _ := config.ParseLimit(v); ok {
			env = append(env, fmt.Sprintf("%s%s=%d:%d", execshim.EnvExecRlimit, name, l.Soft, l.Hard))
		}
	}
	if spec.Capabilities != nil {
		nums, _ := config.CapNumbers(spec.Capabilities) // validated
		caps := make([]string, len(nums))
		for i, n := range nums {
			caps[i] = strconv.Itoa(n)
		}
		env = append(env, execshim.EnvExecCaps+"="+strings.Join(caps, ","))
	}
	if c := id.cred; c != nil {
		groups := make([]string, len(c.Groups))
		for i, g := range c.Groups {
			groups[i] = strconv.FormatUint(uint64(g), 10)
		}
		env = append(env, fmt.Sprintf("%s=%d:%d:%s", execshim.EnvExecCred, c.Uid, c.Gid, strings.Join(groups, ",")))
	}
	return env
}
