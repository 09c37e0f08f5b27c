// Command testsvc runs inside test appliances and lets the QEMU tests look at the machine
// from inside: processes, zombies, modules, mounts, routes, files, and signals to PID 1. Run
// with -mode touch it is the appliance's oneshot setup task instead: it writes a file and exits.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"math/bits"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	mode := flag.String("mode", "serve", "serve | orphan-parent | orphan-child | touch")
	addr := flag.String("addr", ":81", "listen address")
	life := flag.Duration("life", 500*time.Millisecond, "orphan-child: how long to live")
	file := flag.String("file", "", "touch: the file to write")
	flag.Parse()
	switch *mode {
	case "touch":
		// A oneshot's work: leave a mark the tests can look for, and exit 0.
		if err := os.WriteFile(*file, []byte(time.Now().Format(time.RFC3339Nano)+"\n"), 0o644); err != nil {
			log.Fatal(err)
		}
		os.Exit(0)
	case "orphan-parent":
		// Start a child and exit at once: the child is re-parented to PID 1 (or the nearest
		// subreaper), which must reap it when it ends.
		c := exec.Command("/proc/self/exe", "-mode", "orphan-child", "-life", life.String())
		if err := c.Start(); err != nil {
			log.Fatal(err)
		}
		fmt.Println(c.Process.Pid)
		os.Exit(0)
	case "orphan-child":
		time.Sleep(*life)
		os.Exit(0)
	}
	http.HandleFunc("GET /orphan", orphan)
	http.HandleFunc("GET /proc/{pid}", procState)
	http.HandleFunc("GET /zombies", zombies)
	http.HandleFunc("GET /info", info)
	http.HandleFunc("GET /filesystem", filesystem)
	http.HandleFunc("POST /signal-init", signalInit)
	http.HandleFunc("GET /file", readFile)
	http.HandleFunc("PUT /file", writeFile)
	log.Printf("testsvc listening on %s", *addr)
	log.Fatal(http.ListenAndServe(*addr, nil))
}

// orphan makes a grandchild whose parent has exited, and reports its pid and new parent.
func orphan(w http.ResponseWriter, r *http.Request) {
	out, err := exec.Command("/proc/self/exe", "-mode", "orphan-parent", "-life", "700ms").Output()
	if err != nil {
		http.Error(w, err.Error(), 500)
		return
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(out)))
	st, err := stat(pid)
	if err != nil {
		http.Error(w, "grandchild vanished before it could be inspected: "+err.Error(), 500)
		return
	}
	writeJSON(w, map[string]any{"pid": pid, "ppid": st.ppid, "state": st.state})
}

func procState(w http.ResponseWriter, r *http.Request) {
	pid, _ := strconv.Atoi(r.PathValue("pid"))
	st, err := stat(pid)
	if err != nil {
		writeJSON(w, map[string]any{"pid": pid, "state": "gone"})
		return
	}
	writeJSON(w, map[string]any{"pid": pid, "state": st.state, "ppid": st.ppid})
}

func zombies(w http.ResponseWriter, r *http.Request) {
	ents, _ := os.ReadDir("/proc")
	list := []string{}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if st, err := stat(pid); err == nil && st.state == "Z" {
			list = append(list, fmt.Sprintf("%d (%s) ppid %d", pid, st.comm, st.ppid))
		}
	}
	writeJSON(w, map[string]any{"zombies": list})
}

func info(w http.ResponseWriter, r *http.Request) {
	var u syscall.Utsname
	_ = syscall.Uname(&u)
	host, _ := os.Hostname()
	cmdline, _ := os.ReadFile("/proc/cmdline")
	modprobe, _ := os.ReadFile("/proc/sys/kernel/modprobe")
	writeJSON(w, map[string]any{
		"hostname": host,
		"release":  utsString(u.Release[:]),
		"modules":  loadedModules(),
		"cmdline":  strings.TrimSpace(string(cmdline)),
		"modprobe": strings.TrimSpace(string(modprobe)),
		"mounts":   mountTargets(),
		"pid1_rss": statusField(1, "VmRSS"),
		"cgroup":   cgroupLimits(),
		"resolv":   strings.TrimSpace(string(must(os.ReadFile("/etc/resolv.conf")))),
		"routes":   routes(),
	})
}

// filesystem asks the kernel for a file system type by mounting it; when the type is a module
// the kernel runs its modprobe helper (request_module "fs-TYPE") before failing or mounting.
func filesystem(w http.ResponseWriter, r *http.Request) {
	fstype := r.URL.Query().Get("type")
	before := registered(fstype)
	dir, _ := os.MkdirTemp("", "fsprobe")
	defer os.Remove(dir)
	err := syscall.Mount("none", dir, fstype, syscall.MS_RDONLY, "")
	if err == nil {
		_ = syscall.Unmount(dir, 0)
	}
	msg := "mounted"
	if err != nil {
		msg = err.Error()
	}
	writeJSON(w, map[string]any{"before": before, "after": registered(fstype), "mounterr": msg})
}

func registered(fstype string) bool {
	b, _ := os.ReadFile("/proc/filesystems")
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) > 0 && f[len(f)-1] == fstype {
			return true
		}
	}
	return false
}

func signalInit(w http.ResponseWriter, r *http.Request) {
	sig := map[string]syscall.Signal{"TERM": syscall.SIGTERM, "INT": syscall.SIGINT,
		"USR1": syscall.SIGUSR1, "USR2": syscall.SIGUSR2}[r.URL.Query().Get("sig")]
	if sig == 0 {
		http.Error(w, "sig must be TERM, INT, USR1 or USR2", 400)
		return
	}
	// Answer first, whole: the signal starts the shutdown that stops this service. With a
	// Content-Length the answer is complete once flushed (a chunked one would lack its last
	// chunk when the service is stopped, and the client would see the body break off).
	body, _ := json.Marshal(map[string]any{"sent": sig.String()})
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	_, _ = w.Write(body)
	w.(http.Flusher).Flush()
	_ = syscall.Kill(1, sig)
}

// readFile reports whether the file ?path= exists, and its content.
func readFile(w http.ResponseWriter, r *http.Request) {
	path := r.URL.Query().Get("path")
	b, err := os.ReadFile(path)
	writeJSON(w, map[string]any{"path": path, "exists": err == nil, "content": string(b)})
}

// writeFile replaces the file ?path= with the request's body (the tests rewrite baton's config
// before initctl reload-config). Written beside it and renamed, so no reader sees half of it.
func writeFile(w http.ResponseWriter, r *http.Request) {
	path := r.URL.Query().Get("path")
	b, err := io.ReadAll(r.Body)
	if err == nil {
		err = os.WriteFile(path+".new", b, 0o644)
	}
	if err == nil {
		err = os.Rename(path+".new", path)
	}
	if err != nil {
		http.Error(w, "write "+path+": "+err.Error(), 500)
		return
	}
	writeJSON(w, map[string]any{"path": path, "written": len(b)})
}

type procStat struct {
	comm  string
	state string
	ppid  int
}

func stat(pid int) (procStat, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procStat{}, err
	}
	s := string(b)
	open, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	f := strings.Fields(s[end+1:])
	ppid, _ := strconv.Atoi(f[1])
	return procStat{comm: s[open+1 : end], state: f[0], ppid: ppid}, nil
}

func loadedModules() []string {
	f, err := os.Open("/proc/modules")
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		out = append(out, strings.Fields(sc.Text())[0])
	}
	return out
}

func mountTargets() []string {
	b, _ := os.ReadFile("/proc/self/mounts")
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) > 2 {
			out = append(out, f[1]+" "+f[2])
		}
	}
	return out
}

// routes lists the kernel's IPv4 routing table as "eth0 0.0.0.0/0 via 10.0.2.2" or
// "eth0 10.0.2.0/24", from /proc/net/route (addresses in hex, in the CPU's byte order).
func routes() []string {
	b, _ := os.ReadFile("/proc/net/route")
	ip := func(hex string) (uint32, string) {
		v, _ := strconv.ParseUint(hex, 16, 32)
		return uint32(v), fmt.Sprintf("%d.%d.%d.%d", byte(v), byte(v>>8), byte(v>>16), byte(v>>24))
	}
	var out []string
	for _, l := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(l)
		if len(f) < 8 {
			continue
		}
		_, dst := ip(f[1])
		gw, via := ip(f[2])
		mask, _ := ip(f[7])
		r := fmt.Sprintf("%s %s/%d", f[0], dst, bits.OnesCount32(mask))
		if gw != 0 {
			r += " via " + via
		}
		out = append(out, r)
	}
	return out
}

func utsString(b []int8) string {
	var s strings.Builder
	for _, c := range b {
		if c == 0 {
			break
		}
		s.WriteByte(byte(c))
	}
	return s.String()
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

// statusField returns one field of /proc/PID/status, e.g. VmRSS ("10240 kB").
func statusField(pid int, key string) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && k == key {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// cgroupLimits reads this process's cgroup and the limits set on it.
func cgroupLimits() map[string]string {
	b, _ := os.ReadFile("/proc/self/cgroup")
	_, path, _ := strings.Cut(strings.TrimSpace(string(b)), "::")
	out := map[string]string{"path": path}
	for _, f := range []string{"pids.max", "memory.max"} {
		v, _ := os.ReadFile("/sys/fs/cgroup" + path + "/" + f)
		out[f] = strings.TrimSpace(string(v))
	}
	return out
}

func must(b []byte, _ error) []byte { return b }
