package vm

import (
	"fmt"
	"io"
	"net/http"
	"time"
)

// URL is the host-side address of a forwarded guest port.
func (vm *VM) URL(guestPort int, path string) string {
	return fmt.Sprintf("http://127.0.0.1:%d%s", vm.ports[guestPort], path)
}

// One request may take getTimeout (a slow answer from a starved TCG guest is not a lost one);
// a request that got no answer is tried again until getRetryFor has passed.
const (
	getTimeout  = NoFailTimeout
	getRetryFor = 30 * time.Second
)

var client = &http.Client{Timeout: getTimeout}

// Get fetches a guest URL through the port forward and returns the body; non-200 fails t.
// A request that gets no answer (refused, reset, timeout) is tried again for getRetryFor:
// "started" readiness means the service was executed, not that it listens yet, and QEMU's
// forward resets connections until it does.
func (vm *VM) Get(t TB, guestPort int, path string) string {
	t.Helper()
	return vm.do(t, "GET", guestPort, path)
}

// Post is Get with POST.
func (vm *VM) Post(t TB, guestPort int, path string) string {
	t.Helper()
	return vm.do(t, "POST", guestPort, path)
}

func (vm *VM) do(t TB, method string, guestPort int, path string) string {
	t.Helper()
	start := time.Now()
	for tries := 1; ; tries++ {
		req, _ := http.NewRequest(method, vm.URL(guestPort, path), nil)
		resp, err := client.Do(req)
		if err != nil {
			if time.Since(start) < getRetryFor {
				time.Sleep(100 * time.Millisecond) // nothing to observe: the guest may just not listen yet
				continue
			}
			vm.failT(t, "%s %s (guest port %d): no answer in %d tries over %v (each may take %v); last: %s: %v",
				method, path, guestPort, tries, time.Since(start).Round(time.Millisecond), getTimeout, Reason(err), err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			vm.failT(t, "%s %s (guest port %d): %s %s, then the body broke off: %s: %v", method, path, guestPort, resp.Status, body, Reason(err), err)
		}
		if resp.StatusCode != 200 {
			vm.failT(t, "%s %s (guest port %d): %s: %s", method, path, guestPort, resp.Status, body)
		}
		return string(body)
	}
}
