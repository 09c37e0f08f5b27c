// Package control is baton's HTTP/JSON control API: the server PID 1 (or the subreaper)
// mounts on its local socket and, optionally, over TCP with mutual TLS; the client; and the
// initctl commands built on it.
package control

import (
	"time"

	"github.com/baton-init/baton/services"
)

// DefaultSocket is the local API's socket inside the appliance.
const DefaultSocket = "/run/baton/control.sock"

// ErrorResponse is the body of every 4xx and 5xx answer.
type ErrorResponse struct {
	Error string `json:"error"`
}

// ServiceList is GET /v1/services.
type ServiceList struct {
	Services []services.Status `json:"services"`
}

// ActionResult is the answer to start, stop, restart and power actions.
type ActionResult struct {
	Service string   `json:"service,omitempty"`
	Action  string   `json:"action"`
	Took    string   `json:"took"`
	Killed  []string `json:"killed,omitempty"` // services that needed SIGKILL
	// AlsoStopped: a stop stops the services that require the service first.
	AlsoStopped []string                `json:"also_stopped,omitempty"`
	Status      *services.Status        `json:"status,omitempty"`
	Upgrade     *services.UpgradeReport `json:"upgrade,omitempty"`
}

// Timeline is GET /v1/boot: where boot time went.
type Timeline struct {
	PID1         bool            `json:"pid1"`
	KernelToInit time.Duration   `json:"kernel_to_init"` // 0 outside PID 1
	InitToReady  time.Duration   `json:"init_to_ready"`  // /init start to all services started
	Steps        []TimelineEntry `json:"steps"`
	Services     []TimelineEntry `json:"services"`
	// Previous holds the shutdown steps of the boot before, when known (read from /boot).
	Previous       []TimelineEntry `json:"previous,omitempty"`
	PreviousAction string          `json:"previous_action,omitempty"` // reboot, kexec, …
	// PreviousKexec says how the kernel of this boot was loaded, when a kexec started it: the
	// method, and why the fast one was not used.
	PreviousKexec string `json:"previous_kexec,omitempty"`
	// Update says how the last initctl update ended, when it was not confirmed.
	Update string `json:"update,omitempty"`
}

// TimelineEntry is one boot step or one service's start.
type TimelineEntry struct {
	Name  string        `json:"name"`
	At    time.Duration `json:"at"`   // since the kernel started (since baton started outside PID 1)
	Took  time.Duration `json:"took"` // step duration, or a service's start to ready
	Error string        `json:"error,omitempty"`
	// After lists what a boot step waited for; WaitedFor is the one of those that ended last,
	// the one that held it back. Steps whose spans overlap ran at the same time.
	After     []string `json:"after,omitempty"`
	WaitedFor string   `json:"waited_for,omitempty"`
	Service   string   `json:"service,omitempty"` // the service a boot step started
}

// KexecRequest is POST /v1/system/kexec. Empty fields take the config's [kexec] defaults.
type KexecRequest struct {
	Kernel       string `json:"kernel,omitempty"`
	Initrd       string `json:"initrd,omitempty"`
	Cmdline      string `json:"cmdline,omitempty"` // the whole command line
	Append       string `json:"append,omitempty"`  // added to the (reused or configured) one
	ReuseCmdline bool   `json:"reuse_cmdline,omitempty"`
	LoadOnly     bool   `json:"load_only,omitempty"` // load, do not stop anything
	Unload       bool   `json:"unload,omitempty"`
	Method       string `json:"method,omitempty"` // "fast" or "file"; "" takes [kexec] method
}

// KexecResult says what was loaded; the jump follows the shutdown unless LoadOnly.
type KexecResult struct {
	Kernel  string `json:"kernel,omitempty"`
	Initrd  string `json:"initrd,omitempty"`
	Cmdline string `json:"cmdline,omitempty"`
	Loaded  bool   `json:"loaded"`
	LoadMs  int64  `json:"load_ms"`
	Jumping bool   `json:"jumping"` // services are stopping; the new kernel follows
	Note    string `json:"note,omitempty"`
	// Method is the one that loaded the kernel ("fast" or "file"); Fallback says why the fast
	// method was not used when it was asked for; KASLR what happened to it (fast method).
	Method   string `json:"method,omitempty"`
	Fallback string `json:"fallback,omitempty"`
	KASLR    string `json:"kaslr,omitempty"`
}
