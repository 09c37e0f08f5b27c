package main

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/baton-init/baton/system"
	"github.com/baton-init/baton/system/kmod"
)

// The watchdog across a kexec.
//
// A trial boot after initctl update is reached by kexec, so a new kernel that hangs must be
// caught by a watchdog that the old kernel armed and did not stop on its way out. On Linux
// 6.1 (Debian's kernel) the one thing that stops it during kernel_kexec() is the watchdog
// core's reboot notifier: kernel_restart_prepare() calls the reboot notifiers with SYS_RESTART
// (= SYS_DOWN), and for a device with WDOG_STOP_ON_REBOOT the core calls the driver's stop.
// Drivers ask for that with watchdog_stop_on_reboot() (i6300esb does, in esb_probe); nowayout
// does not change it (the notifier does not look at it), and i6300esb has no .shutdown. The
// core's module parameter stop_on_reboot=0 overrides the driver's choice, but it is read only
// when a device registers, and for a module it is only on the kernel command line for
// modprobe to pass on: so PID 1 passes it itself when it loads the watchdog core
// (watchdogModuleParams) — the command line is not needed, and a loader entry written before
// [watchdog] was set still works. With a kernel whose watchdog core is built in, put
// watchdog.stop_on_reboot=0 on the command line; startWatchdog warns when the parameter is
// not 0.
//
// After the jump the device keeps counting from baton's last pet. The new kernel's driver
// re-initialises it when it loads (i6300esb's probe stops the timer until the device is
// opened), so the new boot's baton must open it soon after the modules load: the watchdog
// step comes right after "load kernel modules". A kernel or an /init that never gets there
// is reset by the old kernel's timer, and the firmware boots the confirmed slot.
var watchdogModuleParams = map[string]string{"watchdog": "stop_on_reboot=0"}

// watchdog is an open hardware watchdog and the goroutine that pets it. The device is opened
// with the kernel's own ioctls rather than u-root's pkg/watchdog: its SetTimeout hands
// WDIOC_SETTIMEOUT the address of a time.Duration (nanoseconds, 64 bits) where the kernel
// reads an int of seconds.
type watchdog struct {
	log     *slog.Logger
	dev     string
	timeout time.Duration // as the driver set it

	mu     sync.Mutex
	fd     int           // -1 once disarmed
	failed bool          // the last pet failed (logged once, until one succeeds)
	done   chan struct{} // closed on disarm: the petting goroutine ends
}

// startWatchdog opens [watchdog] device, sets its timeout and pets it from a goroutine every
// third of the timeout until the machine powers off.
func (m *machine) startWatchdog() error {
	if m.cfg == nil || m.cfg.Watchdog.Device == "" {
		return nil
	}
	w, err := openWatchdog(m.log, m.cfg.Watchdog.Device, m.cfg.Watchdog.Timeout.Duration)
	if err != nil {
		return err
	}
	m.mu.Lock()
	m.watchdog = w
	m.mu.Unlock()
	if b, err := os.ReadFile("/sys/module/watchdog/parameters/stop_on_reboot"); err == nil && strings.TrimSpace(string(b)) != "0" {
		m.log.Warn("the watchdog may be stopped at a kexec (watchdog core's stop_on_reboot="+strings.TrimSpace(string(b))+
			", not 0: the driver decides, and most stop it), so a trial boot that hangs would not be reset;"+
			" add watchdog.stop_on_reboot=0 to the kernel command line", system.KmsgKey, true)
	}
	go w.run()
	m.log.Info("watchdog armed", "device", w.dev, "timeout", w.timeout, "pet_every", w.timeout/3, system.KmsgKey, true)
	return nil
}

func openWatchdog(log *slog.Logger, dev string, timeout time.Duration) (*watchdog, error) {
	// Opening starts the timer. O_CLOEXEC: no service inherits it.
	fd, err := unix.Open(dev, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil, fmt.Errorf("open watchdog %s: %w — is the driver's module in [boot] modules (i6300esb under QEMU's -device i6300esb)?", dev, err)
		}
		return nil, fmt.Errorf("open watchdog %s: %w", dev, err)
	}
	w := &watchdog{log: log, dev: dev, fd: fd, done: make(chan struct{})}
	secs := int(timeout / time.Second)
	if err := unix.IoctlSetPointerInt(fd, unix.WDIOC_SETTIMEOUT, secs); err != nil {
		// Keep it armed at the driver's timeout: a watchdog that cannot be set is better
		// than none, and the pets below go by what the driver says.
		log.Error("watchdog timeout not set; using the driver's", "device", dev,
			"err", fmt.Errorf("ioctl(%s, WDIOC_SETTIMEOUT, %d): %w", dev, secs, err))
	}
	got, err := unix.IoctlGetInt(fd, unix.WDIOC_GETTIMEOUT)
	if err != nil || got < 1 {
		got = secs // the driver cannot say: trust the request
	}
	w.timeout = time.Duration(got) * time.Second
	// Opened is armed: from here on it must be petted even if this first pet fails (pet logs).
	_ = w.pet()
	return w, nil
}

// run pets the watchdog every third of its timeout, so one late round is not a reset.
func (w *watchdog) run() {
	t := time.NewTicker(w.timeout / 3)
	defer t.Stop()
	for {
		select {
		case <-w.done:
			return
		case <-t.C:
			system.Contain(w.log, "watchdog keepalive", func() { _ = w.pet() })
		}
	}
}

// pet restarts the device's countdown.
func (w *watchdog) pet() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.fd < 0 {
		return nil
	}
	err := unix.IoctlWatchdogKeepalive(w.fd)
	if err != nil && !w.failed {
		w.log.Error("watchdog keepalive failed; the machine resets if it goes on failing",
			"err", fmt.Errorf("ioctl(%s, WDIOC_KEEPALIVE): %w", w.dev, err), system.KmsgKey, true)
	} else if err == nil && w.failed {
		w.log.Info("watchdog keepalive works again", "device", w.dev)
	}
	w.failed = err != nil
	return err
}

// disarm stops the device with the magic close ('V' then close), so a machine powered off
// or halted in a VM is not reset later. With nowayout the driver keeps it running anyway.
func (w *watchdog) disarm() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.fd < 0 {
		return nil
	}
	close(w.done)
	_, err := unix.Write(w.fd, []byte("V"))
	if cerr := unix.Close(w.fd); err == nil {
		err = cerr
	}
	w.fd = -1
	if err != nil {
		return fmt.Errorf("disarm watchdog %s (magic close): %w", w.dev, err)
	}
	return nil
}

// watchdogBeforePower runs just before reboot(2): a poweroff or halt disarms the watchdog; a
// reboot or kexec pets it one last time and leaves it armed, for the next boot to take over
// (or, if that boot hangs, to reset the machine into the firmware's default slot).
func (m *machine) watchdogBeforePower(action system.PowerAction) {
	m.mu.Lock()
	w := m.watchdog
	m.mu.Unlock()
	if w == nil {
		return
	}
	switch action {
	case system.Poweroff, system.Halt:
		if err := w.disarm(); err != nil {
			m.log.Warn("watchdog not disarmed; it may reset the machine while it is off", "err", err)
			return
		}
		m.log.Info("watchdog disarmed", "device", w.dev, "action", action.String())
	default:
		_ = w.pet()
		m.log.Info("watchdog stays armed across the "+action.String(), "device", w.dev, "timeout", w.timeout, system.KmsgKey, true)
	}
}

// rearmWatchdog opens the watchdog again after a poweroff or halt that did not happen.
func (m *machine) rearmWatchdog() {
	m.mu.Lock()
	w := m.watchdog
	m.mu.Unlock()
	if w == nil {
		return
	}
	w.mu.Lock()
	disarmed := w.fd < 0
	w.mu.Unlock()
	if disarmed {
		if err := m.startWatchdog(); err != nil {
			m.log.Error("watchdog not armed again", "err", err)
		}
	}
}

// keepWatchdogAcrossKexec makes the loader pass the watchdog core stop_on_reboot=0 (see the
// top of this file) when a watchdog is configured.
func (m *machine) keepWatchdogAcrossKexec(l *kmod.Loader) {
	if m.cfg != nil && m.cfg.Watchdog.Device != "" {
		l.SetParams(watchdogModuleParams)
	}
}
