package main

import (
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/baton-init/baton/config"
	"github.com/baton-init/baton/system"
)

// A regular file stands in for the device: the ioctls fail (ENOTTY), which must not keep the
// watchdog from being held and petted, and what is written is what the driver would read.
// Host-only: no device, no root.
func TestWatchdogArmedUntilPoweroffDisarmsIt(t *testing.T) {
	for _, tc := range []struct {
		action system.PowerAction
		want   string // what the driver reads: "" (left armed) or the magic close
	}{
		{system.Kexec, ""},
		{system.Reboot, ""},
		{system.Poweroff, "V"},
		{system.Halt, "V"},
	} {
		t.Run(tc.action.String(), func(t *testing.T) {
			dev := filepath.Join(t.TempDir(), "watchdog")
			if err := os.WriteFile(dev, nil, 0o600); err != nil {
				t.Fatal(err)
			}
			m := newMachine(io.Discard)
			m.cfg = &config.Config{Watchdog: config.Watchdog{Device: dev, Timeout: config.Duration{Duration: 3 * time.Second}}}
			if err := m.startWatchdog(); err != nil {
				t.Fatalf("startWatchdog with ioctls that fail: %v", err)
			}
			if m.watchdog == nil || m.watchdog.timeout != 3*time.Second {
				t.Fatalf("watchdog %+v, want held with the configured timeout", m.watchdog)
			}
			m.watchdogBeforePower(tc.action)
			b, err := os.ReadFile(dev)
			if err != nil {
				t.Fatal(err)
			}
			if string(b) != tc.want {
				t.Errorf("%s: the device read %q, want %q", tc.action, b, tc.want)
			}
			if armed := m.watchdog.fd >= 0; armed != (tc.want == "") {
				t.Errorf("%s: still open = %v", tc.action, armed)
			}
			m.rearmWatchdog() // as after a poweroff that failed: open again
			if m.watchdog.fd < 0 {
				t.Errorf("%s: not armed again after the power action failed", tc.action)
			}
			_ = m.watchdog.disarm()
		})
	}
}

func TestNoWatchdogWithoutDevice(t *testing.T) {
	m := newMachine(io.Discard)
	m.cfg = &config.Config{}
	if err := m.startWatchdog(); err != nil || m.watchdog != nil {
		t.Fatalf("startWatchdog without [watchdog]: %v, %+v", err, m.watchdog)
	}
	m.watchdogBeforePower(system.Poweroff) // nothing to do, no panic
}
