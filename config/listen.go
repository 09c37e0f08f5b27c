package config

import (
	"fmt"
	"net"
	"strings"
)

// Listen is a parsed socket address.
type Listen struct {
	Network string // tcp, tcp6, udp, udp6, unix, unixgram, unixpacket
	Address string // host:port, or a path
}

// Stream reports whether the socket is listened on (accept) rather than read from.
func (l Listen) Stream() bool {
	switch l.Network {
	case "tcp", "tcp4", "tcp6", "unix", "unixpacket":
		return true
	}
	return false
}

// IsUnix reports whether the address is a file path.
func (l Listen) IsUnix() bool { return strings.HasPrefix(l.Network, "unix") }

// ParseListen parses tcp://HOST:PORT, tcp6://[::]:PORT, udp://…, unix:///path,
// unixgram:///path, unixpacket:///path. tcp:// and udp:// are IPv4 unless the host is IPv6.
func ParseListen(s string) (Listen, error) {
	scheme, rest, ok := strings.Cut(s, "://")
	if !ok || rest == "" {
		return Listen{}, fmt.Errorf("listen %s: want SCHEME://ADDRESS, e.g. tcp://0.0.0.0:80 or unix:///run/app.sock", quote(s))
	}
	switch scheme {
	case "tcp", "tcp6", "udp", "udp6":
		host, port, err := net.SplitHostPort(rest)
		if err != nil {
			return Listen{}, fmt.Errorf("listen %s: %s", quote(s), clip(err.Error()))
		}
		if _, err := net.LookupPort(scheme[:3], port); err != nil || port == "" {
			return Listen{}, fmt.Errorf("listen %s: bad port %s", quote(s), quote(port))
		}
		if host != "" && net.ParseIP(host) == nil {
			return Listen{}, fmt.Errorf("listen %s: %s is not an IP address (names are not resolved at boot)", quote(s), quote(host))
		}
		network := scheme
		if ip := net.ParseIP(host); len(scheme) == 3 && (ip == nil || ip.To4() != nil) {
			network = scheme + "4"
		}
		return Listen{Network: network, Address: rest}, nil
	case "unix", "unixgram", "unixpacket":
		if strings.IndexByte(rest, 0) >= 0 {
			return Listen{}, fmt.Errorf("listen %s: the path contains a NUL byte", quote(s))
		}
		if !strings.HasPrefix(rest, "/") {
			return Listen{}, fmt.Errorf("listen %s: the path must be absolute (unix:///run/app.sock)", quote(s))
		}
		return Listen{Network: scheme, Address: rest}, nil
	}
	return Listen{}, fmt.Errorf("listen %s: unknown scheme %s (tcp, tcp6, udp, udp6, unix, unixgram, unixpacket)", quote(s), quote(scheme))
}
