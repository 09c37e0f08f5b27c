package system

import (
	"errors"
	"fmt"
	"time"

	"golang.org/x/sys/unix"
)

// WaitRandom waits until the kernel's random pool is initialised, at most timeout. Until then
// getrandom(2) — under crypto/rand, DHCP transaction ids and TLS — blocks, beyond the reach of
// any context; on an emulated CPU without RDRAND and without virtio-rng that can be forever.
// Better a boot step that fails and says why than one that never ends.
func WaitRandom(timeout time.Duration) error {
	buf := make([]byte, 1)
	deadline := time.Now().Add(timeout)
	for {
		_, err := unix.Getrandom(buf, unix.GRND_NONBLOCK)
		if err == nil {
			return nil
		}
		if !errors.Is(err, unix.EAGAIN) {
			return fmt.Errorf("getrandom: %w", err)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the kernel's random pool is not ready after %s — give the machine an entropy source: virtio-rng (QEMU -device virtio-rng-pci, and virtio_rng in [boot] modules) or a CPU with RDRAND", timeout)
		}
		// Polling: the kernel offers no event for "pool ready" short of blocking in getrandom.
		time.Sleep(20 * time.Millisecond)
	}
}
