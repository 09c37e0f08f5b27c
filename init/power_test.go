package main

import (
	"io"
	"sync"
	"testing"
	"time"

	"github.com/baton-init/baton/system"
)

// During the boot nobody reads m.power. However many requests arrive, from however many
// goroutines (signals, power button, API), none may block, and exactly one is delivered.
// Host-only: it builds the machine value but boots nothing. Run with -race.
func TestPowerRequestsNeverBlockAndTheFirstWins(t *testing.T) {
	m := newMachine(io.Discard)
	var wg sync.WaitGroup
	accepted := make(chan system.PowerAction, 100)
	for g := range 5 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 20 {
				a := []system.PowerAction{system.Reboot, system.Poweroff, system.Halt}[(g+i)%3]
				if err := m.requestPower("test", a, nil); err == nil {
					accepted <- a
				}
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("a power request blocked while nobody read the power channel")
	}
	close(accepted)
	if len(accepted) != 1 {
		t.Fatalf("%d requests accepted, want exactly 1", len(accepted))
	}
	want := <-accepted
	select {
	case got := <-m.power:
		if got != want {
			t.Errorf("delivered %s, want the accepted %s", got, want)
		}
	default:
		t.Fatal("the accepted request was not delivered")
	}
	select {
	case got := <-m.power:
		t.Errorf("a second action delivered: %s", got)
	default:
	}
	// The API holds m.mu to answer timeline requests: it must still be free.
	if !m.mu.TryLock() {
		t.Fatal("m.mu left held")
	}
	m.mu.Unlock()
}
