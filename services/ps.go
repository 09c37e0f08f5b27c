package services

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/baton-init/baton/system"
)

// Processes is what initctl status shows of a service's processes (systemctl status's
// CGroup: tree and Memory: line). It is read from /proc and the cgroup by the caller, from
// the published status, never by the loop.
type Processes struct {
	Cmdline []string `json:"cmdline,omitempty"` // the main process's, as /proc has it
	// Memory in bytes: the cgroup's memory.current, or without a cgroup the sum of the
	// processes' resident sets; MemorySource says which.
	Memory       int64  `json:"memory"`
	MemorySource string `json:"memory_source,omitempty"` // "cgroup" or "rss"
	Tree         []Proc `json:"tree,omitempty"`          // depth-first, parents before children
}

// Proc is one process of a service.
type Proc struct {
	Pid     int    `json:"pid"`
	PPid    int    `json:"ppid"`
	Depth   int    `json:"depth"` // 0 for a process whose parent is not the service's
	Cmdline string `json:"cmdline"`
}

// Processes lists the service's processes: those in its cgroup, or without one its main
// process's descendants and process group (a daemon's workers).
func (s *Service) Processes() Processes {
	st := s.Status()
	var out Processes
	all := readProcs()
	member := map[int]bool{}
	if st.Cgroup != "" {
		for _, p := range cgroupProcs(st.Cgroup) {
			member[p] = true
		}
	}
	var roots []int
	if st.Pid > 0 {
		roots = append(roots, st.Pid)
	}
	for _, g := range st.Generations {
		roots = append(roots, g.Pid)
	}
	for _, root := range roots {
		member[root] = all[root] != nil
		for pid, p := range all {
			if p.Pgrp == root || descends(all, pid, root) {
				member[pid] = true
			}
		}
	}
	for pid, in := range member {
		if !in || all[pid] == nil {
			delete(member, pid)
		}
	}
	out.Tree = tree(all, member)
	if st.Pid > 0 {
		out.Cmdline = cmdline(st.Pid)
	}
	if b, err := os.ReadFile(filepath.Join(st.Cgroup, "memory.current")); st.Cgroup != "" && err == nil {
		out.Memory, _ = strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
		out.MemorySource = "cgroup"
	} else if len(out.Tree) > 0 {
		for _, p := range out.Tree {
			out.Memory += rss(p.Pid)
		}
		out.MemorySource = "rss"
	}
	return out
}

// readProcs reads every process's stat; kernel threads and zombies are left out.
func readProcs() map[int]*system.ProcStat {
	ents, _ := os.ReadDir("/proc")
	all := map[int]*system.ProcStat{}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if st, err := system.ReadProcStat(pid); err == nil && !st.Kernel && st.State != 'Z' {
			all[pid] = &st
		}
	}
	return all
}

// descends reports whether pid is a descendant of root (bounded: pids can form no cycle,
// but /proc is read one file at a time while processes come and go).
func descends(all map[int]*system.ProcStat, pid, root int) bool {
	for i := 0; i < 64 && pid > 1; i++ {
		p := all[pid]
		if p == nil {
			return false
		}
		if p.PPid == root {
			return true
		}
		pid = p.PPid
	}
	return false
}

// tree orders member processes parents first, children by pid under their parent.
func tree(all map[int]*system.ProcStat, member map[int]bool) []Proc {
	children := map[int][]int{}
	var tops []int
	for pid := range member {
		if pp := all[pid].PPid; member[pp] {
			children[pp] = append(children[pp], pid)
		} else {
			tops = append(tops, pid)
		}
	}
	var out []Proc
	var walk func(pid, depth int)
	walk = func(pid, depth int) {
		out = append(out, Proc{Pid: pid, PPid: all[pid].PPid, Depth: depth, Cmdline: strings.Join(cmdline(pid), " ")})
		kids := children[pid]
		slices.Sort(kids)
		for _, k := range kids {
			walk(k, depth+1)
		}
	}
	slices.Sort(tops)
	for _, t := range tops {
		walk(t, 0)
	}
	return out
}

func cmdline(pid int) []string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil || len(b) == 0 {
		return nil
	}
	return strings.Split(string(bytes.TrimRight(b, "\x00")), "\x00")
}

// rss is a process's resident set in bytes (/proc/PID/statm's second field, in pages).
func rss(pid int) int64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/statm")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0
	}
	pages, _ := strconv.ParseInt(f[1], 10, 64)
	return pages * int64(os.Getpagesize())
}
