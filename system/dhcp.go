package system

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// dhcpLease configures an interface from DHCPv4 (insomniacslk/dhcp, as u-root's dhclient):
// address and prefix, default route, and the name servers in /etc/resolv.conf. The lease is
// renewed in the background at half its time, for the life of PID 1.
func dhcpLease(log *slog.Logger, h *netlink.Handle, link netlink.Link, iface string, timeout time.Duration) error {
	// The client's transaction ids come from crypto/rand: without a ready pool it would block.
	if err := WaitRandom(timeout); err != nil {
		return fmt.Errorf("%s: dhcp: %w", iface, err)
	}
	client, err := nclient4.New(iface, nclient4.WithTimeout(timeout/3), nclient4.WithRetry(3))
	if err != nil {
		return fmt.Errorf("%s: dhcp: %w", iface, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	lease, err := client.Request(ctx)
	if err != nil {
		client.Close()
		return fmt.Errorf("%s: dhcp: no lease within %s: %w — is a DHCP server on this network?", iface, timeout, err)
	}
	if err := applyLease(h, link, lease.ACK); err != nil {
		client.Close()
		return fmt.Errorf("%s: dhcp: %w", iface, err)
	}
	log.Info("dhcp lease", "interface", iface, "address", leaseAddr(lease.ACK), "router", lease.ACK.Router(),
		"dns", lease.ACK.DNS(), "lease", lease.ACK.IPAddressLeaseTime(time.Hour))
	go renewLoop(log, client, link, iface, lease)
	return nil
}

func leaseAddr(ack *dhcpv4.DHCPv4) *net.IPNet {
	mask := ack.SubnetMask()
	if mask == nil {
		mask = ack.YourIPAddr.DefaultMask()
	}
	return &net.IPNet{IP: ack.YourIPAddr, Mask: mask}
}

func applyLease(h *netlink.Handle, link netlink.Link, ack *dhcpv4.DHCPv4) error {
	if err := h.AddrReplace(link, &netlink.Addr{IPNet: leaseAddr(ack)}); err != nil {
		return fmt.Errorf("add address %s: %w", leaseAddr(ack), err)
	}
	if routers := ack.Router(); len(routers) > 0 {
		route := &netlink.Route{LinkIndex: link.Attrs().Index, Gw: routers[0], Scope: netlink.SCOPE_UNIVERSE}
		if err := h.RouteReplace(route); err != nil {
			return fmt.Errorf("default route via %s: %w", routers[0], err)
		}
	}
	if dns := ack.DNS(); len(dns) > 0 {
		var b strings.Builder
		for _, s := range dns {
			fmt.Fprintf(&b, "nameserver %s\n", s)
		}
		if err := os.WriteFile("/etc/resolv.conf", []byte(b.String()), 0o644); err != nil {
			return fmt.Errorf("write /etc/resolv.conf: %w", err)
		}
	}
	return nil
}

// renewLoop renews the lease for the life of PID 1; a panic in one renewal is logged and the
// next one still happens, or the address would lapse when the lease ends.
func renewLoop(log *slog.Logger, client *nclient4.Client, link netlink.Link, iface string, lease *nclient4.Lease) {
	defer Recover(log, "dhcp renew "+iface)
	for {
		wait := lease.ACK.IPAddressLeaseTime(time.Hour) / 2
		time.Sleep(max(wait, 30*time.Second))
		Contain(log, "dhcp renew "+iface, func() { lease = renewOnce(log, client, link, iface, lease) })
	}
}

// renewOnce renews lease and applies the answer; it returns the lease to renew next time.
func renewOnce(log *slog.Logger, client *nclient4.Client, link netlink.Link, iface string, lease *nclient4.Lease) *nclient4.Lease {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	renewed, err := client.Renew(ctx, lease)
	cancel()
	if err != nil {
		log.Warn("dhcp renew failed; keeping the address and trying again", "interface", iface, "err", err)
		return lease
	}
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		log.Warn("dhcp renew: cannot apply the renewed lease", "interface", iface, "err", fmt.Errorf("netlink handle: %w", err))
		return lease
	}
	defer h.Close()
	if err := applyLease(h, link, renewed.ACK); err != nil {
		log.Warn("dhcp renew", "interface", iface, "err", err)
	}
	return renewed
}
