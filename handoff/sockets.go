package handoff

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/baton-init/baton/config"
	"github.com/baton-init/baton/system"
)

// Held is a socket PID 1 has bound and keeps open for a service: it outlives every process of
// the service, so clients queue in its backlog through restarts and upgrades instead of being
// refused.
type Held struct {
	Spec   config.Socket
	Listen config.Listen
	Fd     int // never read or accepted on by baton itself
}

// Bind creates, binds and (for stream sockets) listens on the socket spec describes. The error
// names the socket and its address.
func Bind(spec config.Socket) (*Held, error) {
	l, err := config.ParseListen(spec.Listen)
	if err != nil {
		return nil, err
	}
	fd, err := bind(spec, l)
	if err != nil {
		return nil, fmt.Errorf("socket %s (%s): %w", spec.Name, spec.Listen, err)
	}
	return &Held{Spec: spec, Listen: l, Fd: fd}, nil
}

// Close closes the socket (only when the service is removed: baton holds it for good).
func (h *Held) Close() error { return unix.Close(h.Fd) }

func bind(spec config.Socket, l config.Listen) (int, error) {
	family, sotype, sa, err := sockaddr(l)
	if err != nil {
		return -1, err
	}
	// Blocking, as systemd passes sockets: daemons that want non-blocking set it themselves.
	fd, err := unix.Socket(family, sotype|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("socket: %w", err)
	}
	fail := func(what string, err error) (int, error) {
		unix.Close(fd)
		return -1, fmt.Errorf("%s: %w", what, err)
	}
	if !l.IsUnix() {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
			return fail("SO_REUSEADDR", err)
		}
		if spec.ReusePort {
			if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); err != nil {
				return fail("SO_REUSEPORT", err)
			}
		}
		if family == unix.AF_INET6 && spec.V6Only != nil {
			if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, boolInt(*spec.V6Only)); err != nil {
				return fail("IPV6_V6ONLY", err)
			}
		}
		// The boot binds held sockets before the network is configured, so a specific address
		// is not on any interface yet: bind it anyway (systemd's FreeBind=), and the socket
		// receives once the address is there.
		if specificAddress(l) {
			if err := freeBind(fd, family); err != nil {
				return fail("IP_FREEBIND", err)
			}
		}
	} else if err := removeStale(l.Address); err != nil {
		return fail("replace "+l.Address, err)
	}
	if err := unix.Bind(fd, sa); err != nil {
		return fail("bind", err)
	}
	if l.IsUnix() {
		if err := unixPerms(spec, l.Address); err != nil {
			return fail("permissions of "+l.Address, err)
		}
	}
	if l.Stream() {
		if err := unix.Listen(fd, spec.Backlog); err != nil {
			return fail("listen", err)
		}
	}
	return fd, nil
}

func sockaddr(l config.Listen) (family, sotype int, sa unix.Sockaddr, err error) {
	switch l.Network {
	case "unix", "unixgram", "unixpacket":
		sotype = map[string]int{"unix": unix.SOCK_STREAM, "unixgram": unix.SOCK_DGRAM, "unixpacket": unix.SOCK_SEQPACKET}[l.Network]
		return unix.AF_UNIX, sotype, &unix.SockaddrUnix{Name: l.Address}, nil
	}
	host, portStr, _ := net.SplitHostPort(l.Address)
	port, _ := strconv.Atoi(portStr)
	sotype = unix.SOCK_STREAM
	if l.Network[:3] == "udp" {
		sotype = unix.SOCK_DGRAM
	}
	var ip netip.Addr
	if host != "" {
		if ip, err = netip.ParseAddr(host); err != nil {
			return 0, 0, nil, err
		}
	}
	if l.Network == "tcp4" || l.Network == "udp4" {
		if !ip.IsValid() {
			ip = netip.IPv4Unspecified()
		}
		return unix.AF_INET, sotype, &unix.SockaddrInet4{Port: port, Addr: ip.Unmap().As4()}, nil
	}
	if !ip.IsValid() {
		ip = netip.IPv6Unspecified()
	}
	return unix.AF_INET6, sotype, &unix.SockaddrInet6{Port: port, Addr: ip.As16()}, nil
}

// specificAddress reports a TCP or UDP address that names one host address (not 0.0.0.0 or ::).
func specificAddress(l config.Listen) bool {
	host, _, err := net.SplitHostPort(l.Address)
	if err != nil || host == "" {
		return false
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && !ip.IsUnspecified()
}

func freeBind(fd, family int) error {
	if family == unix.AF_INET6 {
		return unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_FREEBIND, 1)
	}
	return unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_FREEBIND, 1)
}

// removeStale removes a socket file left by an earlier run; anything else at the path is an
// error, not something to delete.
func removeStale(path string) error {
	st, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if st.Mode()&os.ModeSocket == 0 {
		return fmt.Errorf("%s exists and is not a socket", path)
	}
	return os.Remove(path)
}

func unixPerms(spec config.Socket, path string) error {
	mode, _ := strconv.ParseUint(spec.Mode, 8, 32)
	if err := os.Chmod(path, os.FileMode(mode)); err != nil {
		return err
	}
	if spec.Owner == "" && spec.Group == "" {
		return nil
	}
	uid, gid := -1, -1
	if spec.Owner != "" {
		u, _, _, err := system.LookupUser(spec.Owner)
		if err != nil {
			return fmt.Errorf("owner: %w", err)
		}
		uid = int(u)
	}
	if spec.Group != "" {
		g, err := system.LookupGroup(spec.Group)
		if err != nil {
			return err
		}
		gid = int(g)
	}
	return os.Lchown(path, uid, gid)
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
