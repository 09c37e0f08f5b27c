package system

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/baton-init/baton/config"
)

// LoopbackUp brings lo up; without it even 127.0.0.1 is unreachable inside the appliance.
func LoopbackUp() error {
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("find lo: %w", err)
	}
	if err := netlink.LinkSetUp(lo); err != nil {
		return fmt.Errorf("set lo up: %w", err)
	}
	return nil
}

// ConfigureInterface gives one interface its static address and default route. It waits up
// to wait for the interface to appear, since drivers probe devices asynchronously after their
// module is loaded.
func ConfigureInterface(log *slog.Logger, n config.Network, wait time.Duration) error {
	return ConfigureInterfaceAfter(log, n, nil, wait)
}

// ConfigureInterfaceAfter is ConfigureInterface for a boot that loads drivers meanwhile: the
// interface may appear while drivers is open, and wait counts from when it closes (nil: now).
// The network then comes up as soon as its own driver has bound, not after every module.
func ConfigureInterfaceAfter(log *slog.Logger, n config.Network, drivers <-chan struct{}, wait time.Duration) error {
	// One netlink socket for all the requests: the package's default opens one per call.
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("netlink: %w", err)
	}
	defer h.Close()
	link, err := waitForLink(h, n.Interface, drivers, wait)
	if err != nil {
		return err
	}
	if n.MTU != 0 {
		if err := h.LinkSetMTU(link, n.MTU); err != nil {
			return fmt.Errorf("%s: set mtu %d: %w", n.Interface, n.MTU, err)
		}
	}
	if n.Address == "dhcp" {
		// The link must be up for the DHCP exchange to leave it.
		if err := h.LinkSetUp(link); err != nil {
			return fmt.Errorf("%s: set up: %w", n.Interface, err)
		}
		return dhcpLease(log, h, link, n.Interface, 10*time.Second)
	}
	if n.Address != "" {
		addr, err := netlink.ParseAddr(n.Address)
		if err != nil {
			return fmt.Errorf("%s: address %q: %w", n.Interface, n.Address, err)
		}
		if err := h.AddrReplace(link, addr); err != nil {
			return fmt.Errorf("%s: add address %s: %w", n.Interface, n.Address, err)
		}
	}
	if err := h.LinkSetUp(link); err != nil {
		return fmt.Errorf("%s: set up: %w", n.Interface, err)
	}
	if n.Gateway != "" {
		gw := net.ParseIP(n.Gateway)
		route := &netlink.Route{LinkIndex: link.Attrs().Index, Gw: gw, Scope: netlink.SCOPE_UNIVERSE}
		if err := h.RouteReplace(route); err != nil {
			return fmt.Errorf("%s: default route via %s: %w — is the gateway inside %s?", n.Interface, n.Gateway, err, n.Address)
		}
	}
	log.Debug("interface configured", "interface", n.Interface, "address", n.Address, "gateway", n.Gateway)
	return nil
}

func waitForLink(h *netlink.Handle, name string, drivers <-chan struct{}, wait time.Duration) (netlink.Link, error) {
	var deadline time.Time
	if drivers == nil {
		deadline = time.Now().Add(wait)
	}
	// Whatever the drivers do, not forever.
	limit := time.Now().Add(2*time.Minute + wait)
	for {
		link, err := h.LinkByName(name)
		if err == nil {
			return link, nil
		}
		var notFound netlink.LinkNotFoundError
		if !errors.As(err, &notFound) && !errors.Is(err, unix.ENODEV) {
			return nil, fmt.Errorf("find interface %s: %w", name, err)
		}
		if deadline.IsZero() {
			select {
			case <-drivers:
				deadline = time.Now().Add(wait)
			default:
			}
		}
		if (!deadline.IsZero() && time.Now().After(deadline)) || time.Now().After(limit) {
			return nil, fmt.Errorf("interface %s did not appear within %s of the drivers loading — is its driver in [boot] modules and in the image?", name, wait)
		}
		// Polling: a netlink link subscription would do, but it is one short wait per boot.
		time.Sleep(20 * time.Millisecond)
	}
}
