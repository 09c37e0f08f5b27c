package system

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// ProcStat is the part of /proc/PID/stat baton needs.
type ProcStat struct {
	Pid    int
	Comm   string
	State  byte // R, S, D, Z, …
	PPid   int
	Pgrp   int
	Kernel bool // a kernel thread (PF_KTHREAD)
}

const pfKthread = 0x00200000

// ReadProcStat parses /proc/PID/stat. comm may hold spaces and parentheses, so the fields are
// found after the last ')'.
func ReadProcStat(pid int) (ProcStat, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return ProcStat{}, err
	}
	return parseProcStat(pid, string(b))
}

func parseProcStat(pid int, s string) (ProcStat, error) {
	open, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if open < 0 || end < open {
		return ProcStat{}, fmt.Errorf("/proc/%d/stat: malformed", pid)
	}
	f := strings.Fields(s[end+1:])
	// After comm: state(3) ppid(4) pgrp session tty_nr tpgid flags(9)
	if len(f) < 7 || len(f[0]) != 1 {
		return ProcStat{}, fmt.Errorf("/proc/%d/stat: malformed", pid)
	}
	ppid, _ := strconv.Atoi(f[1])
	pgrp, _ := strconv.Atoi(f[2])
	flags, _ := strconv.ParseUint(f[6], 10, 64)
	return ProcStat{Pid: pid, Comm: s[open+1 : end], State: f[0][0], PPid: ppid, Pgrp: pgrp, Kernel: flags&pfKthread != 0}, nil
}
