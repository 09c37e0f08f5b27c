package qemutests

import (
	"testing"

	qvm "github.com/baton-init/baton/qemu-tests/vm"
)

// The tests boot through qemu-tests/vm; these names keep them short.
type (
	VM          = qvm.VM
	BootOptions = qvm.BootOptions
)

const (
	webPort     = qvm.WebPort
	testPort    = qvm.TestPort
	controlPort = qvm.ControlPort
	streamPort  = qvm.StreamPort
)

var (
	repoRoot  = qvm.RepoRoot
	panicLine = qvm.PanicLine
)

func kernel(t *testing.T, flavour string) (string, string) { t.Helper(); return qvm.Kernel(t, flavour) }

func skipOrFail(t *testing.T, format string, args ...any) {
	t.Helper()
	qvm.SkipOrFail(t, format, args...)
}

// Boot boots with the host's initctl and the test image's client certificates at hand.
func Boot(t *testing.T, o BootOptions) *VM {
	t.Helper()
	o.Initctl, o.TLSDir = hostBin+"/initctl", hostTLS
	return qvm.Boot(t, o)
}
