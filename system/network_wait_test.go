package system

import (
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// An interface that has not appeared is waited for while drivers load, and for wait after:
// the network step need not wait for every module, and a missing driver still fails.
func TestWaitForLinkCountsFromTheDrivers(t *testing.T) {
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		t.Skipf("no netlink: %v", err)
	}
	defer h.Close()
	if _, err := waitForLink(h, "lo", make(chan struct{}), time.Second); err != nil {
		t.Fatalf("lo while drivers load: %v", err)
	}
	drivers := make(chan struct{})
	const loading, wait = 400 * time.Millisecond, 200 * time.Millisecond
	time.AfterFunc(loading, func() { close(drivers) })
	start := time.Now()
	_, err = waitForLink(h, "baton-nosuch0", drivers, wait)
	took := time.Since(start)
	if err == nil || !strings.Contains(err.Error(), "did not appear within 200ms of the drivers loading") {
		t.Fatalf("missing interface: %v", err)
	}
	if took < loading+wait {
		t.Fatalf("gave up after %v, before the drivers had loaded (%v) and %v more", took, loading, wait)
	}
}
