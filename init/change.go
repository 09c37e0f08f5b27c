package main

import (
	"fmt"
	"sync"
)

// changeGuard lets one change of the running system happen at a time: a kexec (from its
// request until the shutdown it asks for is pending), an update (while an image is received,
// applied, or confirmed on trial) and a re-exec (from its trial until the execve, or until
// everything is thawed when the execve failed). Each pulls the system from under the others: a
// kexec load that starts while a re-exec has the services frozen would shut down a machine
// whose supervisor is about to be replaced; a re-exec during an update's apply would replace
// the process that is upgrading services and confirming the update. Whether one may start is
// decided once, under one lock, instead of each asking the others whether they are busy and
// then starting (the answer can be stale by then).
type changeGuard struct {
	mu  sync.Mutex
	now string // what holds it ("" when free), for the refusal
}

// changeBusy is the refusal: what holds the guard.
type changeBusy struct{ holder string }

func (e *changeBusy) Error() string {
	return fmt.Sprintf("%s is under way; try again when it is done", e.holder)
}

// take holds the guard for what ("a kexec", "an update", "a re-exec"), or says what holds it.
// release may be called more than once.
func (g *changeGuard) take(what string) (release func(), err error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.now != "" {
		return nil, &changeBusy{holder: g.now}
	}
	g.now = what
	var once sync.Once
	return func() {
		once.Do(func() {
			g.mu.Lock()
			g.now = ""
			g.mu.Unlock()
		})
	}, nil
}
