// Package client is what a service links to talk to baton (or systemd): readiness and status
// over $NOTIFY_SOCKET, in the spirit of coreos/go-systemd's daemon package.
package client

import (
	"fmt"
	"net"
	"os"
)

// Notify sends state ("READY=1", "STATUS=…", several lines at once) to $NOTIFY_SOCKET, as
// sd_notify(3) does. It does nothing when the variable is unset (not supervised). A path
// starting with "@" is in the abstract namespace.
func Notify(state string) error {
	path := os.Getenv("NOTIFY_SOCKET")
	if path == "" {
		return nil
	}
	if path[0] == '@' {
		path = "\x00" + path[1:]
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("notify %s: %w", os.Getenv("NOTIFY_SOCKET"), err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(state)); err != nil {
		return fmt.Errorf("notify %s: %w", os.Getenv("NOTIFY_SOCKET"), err)
	}
	return nil
}

// Ready tells the supervisor the service is ready to serve.
func Ready() error { return Notify("READY=1") }

// Stopping tells the supervisor the service has begun to shut down.
func Stopping() error { return Notify("STOPPING=1") }

// Status sets the free-form status line shown by initctl status.
func Status(s string) error { return Notify("STATUS=" + s) }
