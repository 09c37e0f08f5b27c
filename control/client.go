package control

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/baton-init/baton/services"
)

// Client talks to a baton control API.
type Client struct {
	hc     *http.Client
	base   string
	target string // for error messages: the socket path or host:port
}

// NewLocal returns a client for the local socket at path.
func NewLocal(path string) *Client {
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", path)
	}}
	return &Client{hc: &http.Client{Transport: tr}, base: "http://baton", target: path}
}

// NewRemote returns a client for a remote appliance, authenticated by the client certificate
// in tlsDir.
func NewRemote(addr, tlsDir string) (*Client, error) {
	cfg, err := ClientTLS(tlsDir)
	if err != nil {
		return nil, err
	}
	return &Client{hc: &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}}, base: "https://" + addr, target: addr}, nil
}

// APIError is an answer of 4xx or 5xx.
type APIError struct {
	Code int
	Msg  string
}

func (e *APIError) Error() string { return e.Msg }

// ConnError means baton could not be reached at all.
type ConnError struct {
	Target string
	Err    error
}

func (e *ConnError) Error() string {
	msg := fmt.Sprintf("cannot reach baton at %s: %v", e.Target, e.Err)
	if strings.Contains(msg, "remote error: tls: internal error") {
		// What baton's remote listener answers while getrandom(2) would block.
		msg += " (entropy not ready: the appliance's random pool is not initialised yet, so it refuses TLS; its console says more)"
	}
	return msg
}

func (e *ConnError) Unwrap() error { return e.Err }

// request sends one request (with in, if not nil, as its JSON body) and turns a 4xx or 5xx
// answer into an APIError and a failure to connect into a ConnError.
func (c *Client) request(ctx context.Context, method, path string, in any) (*http.Response, error) {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return nil, err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return nil, err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	return c.do(req)
}

// do sends req, turning a 4xx or 5xx answer into an APIError and a failure to connect into a
// ConnError.
func (c *Client) do(req *http.Request) (*http.Response, error) {
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, &ConnError{Target: c.target, Err: unwrapURL(err)}
	}
	if resp.StatusCode >= 400 {
		defer resp.Body.Close()
		var e ErrorResponse
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		if json.Unmarshal(body, &e) != nil || e.Error == "" {
			e.Error = fmt.Sprintf("%s: %s", resp.Status, body)
		}
		return nil, &APIError{Code: resp.StatusCode, Msg: e.Error}
	}
	return resp, nil
}

func unwrapURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

func (c *Client) call(method, path string, in, out any) error {
	resp, err := c.request(context.Background(), method, path, in)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("%s %s: bad answer: %w", method, path, err)
	}
	return nil
}

// Services lists every service.
func (c *Client) Services() ([]services.Status, error) {
	var l ServiceList
	err := c.call("GET", "/v1/services", nil, &l)
	return l.Services, err
}

// Service returns one service.
func (c *Client) Service(name string) (services.Status, error) {
	var s services.Status
	err := c.call("GET", "/v1/services/"+url.PathEscape(name), nil, &s)
	return s, err
}

// Action starts, stops or restarts a service and waits for the outcome.
func (c *Client) Action(name, action string) (ActionResult, error) {
	var r ActionResult
	err := c.call("POST", "/v1/services/"+url.PathEscape(name)+"/"+action, nil, &r)
	return r, err
}

// Upgrade starts a new version of a service (execPath "" keeps the binary) on the same
// sockets and returns once the old one is gone, or with why the upgrade was abandoned.
func (c *Client) Upgrade(name, execPath string) (ActionResult, error) {
	var r ActionResult
	path := "/v1/services/" + url.PathEscape(name) + "/upgrade"
	if execPath != "" {
		path += "?exec=" + url.QueryEscape(execPath)
	}
	err := c.call("POST", path, nil, &r)
	return r, err
}

// Logs returns a service's last n lines (0: all kept).
func (c *Client) Logs(name string, n int) ([]services.LogLine, error) {
	var l []services.LogLine
	err := c.call("GET", "/v1/services/"+url.PathEscape(name)+"/logs?n="+strconv.Itoa(n), nil, &l)
	return l, err
}

// FollowLogs calls fn for the last n lines and then every new line, until ctx ends or the
// connection does.
func (c *Client) FollowLogs(ctx context.Context, name string, n int, fn func(services.LogLine)) error {
	resp, err := c.request(ctx, "GET", "/v1/services/"+url.PathEscape(name)+"/logs?follow=1&n="+strconv.Itoa(n), nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var l services.LogLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			return fmt.Errorf("follow logs: bad line: %w", err)
		}
		fn(l)
	}
	if ctx.Err() != nil {
		return nil
	}
	return sc.Err()
}

// Power asks for reboot, poweroff or halt.
func (c *Client) Power(action string) error {
	var r ActionResult
	return c.call("POST", "/v1/system/"+action, nil, &r)
}

// Kexec asks for a kexec (see KexecRequest).
func (c *Client) Kexec(req KexecRequest) (KexecResult, error) {
	var r KexecResult
	err := c.call("POST", "/v1/system/kexec", req, &r)
	return r, err
}

// Timeline returns the boot timeline.
func (c *Client) Timeline() (Timeline, error) {
	var t Timeline
	err := c.call("GET", "/v1/boot", nil, &t)
	return t, err
}

// ms formats a duration for tables.
func ms(d time.Duration) string {
	if d < time.Second {
		return fmt.Sprintf("%dms", d.Milliseconds())
	}
	return fmt.Sprintf("%.3fs", d.Seconds())
}
