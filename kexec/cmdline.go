package kexec

import "strings"

// OneShot are kernel parameters that describe one boot and must not carry over to the next
// when the command line is reused: the boot loader's (BOOT_IMAGE, initrd), and baton's own
// markers (baton.prev=, which carries the previous shutdown's timeline, baton.spared=, which
// marks the fast method's memmap=, and baton.once.*).
func OneShot(param string) bool {
	key, _, _ := strings.Cut(param, "=")
	switch {
	case key == "BOOT_IMAGE", key == "initrd", key == "baton.prev", key == "baton.spared", strings.HasPrefix(key, "baton.once."):
		return true
	}
	return false
}

// Reuse returns the running kernel's parameters without the one-shot ones, nor the memmap=
// the fast method added to spare the old code (the one baton.spared= names by its checksum; a
// memmap= of the user's stays).
func Reuse(params []string) []string {
	ours := map[string]bool{}
	for _, p := range params {
		if v, ok := strings.CutPrefix(p, "baton.spared="); ok {
			ours[v] = true
		}
	}
	var out []string
	for _, p := range params {
		if v, ok := strings.CutPrefix(p, "memmap="); ok && ours[sparedTag(v)] {
			continue
		}
		if !OneShot(p) {
			out = append(out, p)
		}
	}
	return out
}

// Join quotes parameters that contain spaces, as the kernel expects.
func Join(params []string) string {
	out := make([]string, len(params))
	for i, p := range params {
		if strings.ContainsAny(p, " \t") {
			k, v, ok := strings.Cut(p, "=")
			if ok {
				p = k + `="` + v + `"`
			} else {
				p = `"` + p + `"`
			}
		}
		out[i] = p
	}
	return strings.Join(out, " ")
}
