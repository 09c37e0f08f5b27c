package vm

import (
	"fmt"
	"os"
)

// ProgramTB lets a program (a benchmark) use the harness: Fatalf panics with a Fatal that Run
// turns into a message and exit status 1; cleanups run when Run returns.
type ProgramTB struct {
	Verbose  bool
	cleanups []func()
}

// Fatal is what ProgramTB.Fatalf panics with.
type Fatal struct{ Msg string }

func (t *ProgramTB) Helper()                   {}
func (t *ProgramTB) Fatalf(f string, a ...any) { panic(Fatal{fmt.Sprintf(f, a...)}) }
func (t *ProgramTB) Skipf(f string, a ...any)  { panic(Fatal{fmt.Sprintf(f, a...)}) }
func (t *ProgramTB) Cleanup(f func())          { t.cleanups = append(t.cleanups, f) }

func (t *ProgramTB) Logf(f string, a ...any) {
	if t.Verbose {
		fmt.Fprintf(os.Stderr, f+"\n", a...)
	}
}

func (t *ProgramTB) TempDir() string {
	d, err := os.MkdirTemp("", "baton-bench")
	if err != nil {
		t.Fatalf("%v", err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// RunCleanups runs and forgets the cleanups registered so far, last first.
func (t *ProgramTB) RunCleanups() {
	for i := len(t.cleanups) - 1; i >= 0; i-- {
		t.cleanups[i]()
	}
	t.cleanups = nil
}

// Run calls fn, then the cleanups; a Fatal becomes a message on stderr and exit status 1.
func (t *ProgramTB) Run(name string, fn func()) {
	defer func() {
		t.RunCleanups()
		if p := recover(); p != nil {
			if f, ok := p.(Fatal); ok {
				fmt.Fprintf(os.Stderr, "%s: %s\n", name, f.Msg)
				os.Exit(1)
			}
			panic(p)
		}
	}()
	fn()
}
