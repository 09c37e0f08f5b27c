package vm

import (
	"bufio"
	"fmt"
	"net"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Monitor sends one command to QEMU's human monitor and returns what it printed.
func (vm *VM) Monitor(command string) string {
	vm.test().Helper()
	out, err := vm.monitorCommand(command)
	if err != nil {
		vm.fail("%v", err)
	}
	return out
}

// monitorCommand waits for the prompt, sends command and reads up to the next prompt, which
// QEMU prints once the command ran. A reply cut short by QEMU's exit (a command that ends the
// machine) is not an error once the command was sent.
func (vm *VM) monitorCommand(command string) (string, error) {
	c, err := net.Dial("unix", vm.monitor)
	if err != nil {
		return "", fmt.Errorf("monitor %q: %w", command, err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(c)
	if _, err := readPrompt(r); err != nil {
		return "", fmt.Errorf("monitor %q: waiting for the (qemu) prompt: %w", command, err)
	}
	if _, err := fmt.Fprintf(c, "%s\n", command); err != nil {
		return "", fmt.Errorf("monitor %q: %w", command, err)
	}
	out, _ := readPrompt(r)
	return out, nil
}

// readPrompt reads up to and including the monitor's "(qemu) " prompt.
func readPrompt(r *bufio.Reader) (string, error) {
	var b strings.Builder
	for !strings.HasSuffix(b.String(), "(qemu) ") {
		c, err := r.ReadByte()
		if err != nil {
			return b.String(), err
		}
		b.WriteByte(c)
	}
	return b.String(), nil
}

// hostForward is a line of "info usernet" for a port forward:
//
//	TCP[HOST_FORWARD]   9       127.0.0.1 34925       10.0.2.15    80     0     0
var hostForward = regexp.MustCompile(`TCP\[HOST_FORWARD\]\s+\d+\s+\S+\s+(\d+)\s+\S+\s+(\d+)`)

// readPorts learns which host ports QEMU bound for the forwards (Boot asks for port 0). The
// monitor answers once QEMU's main loop runs, after the forwards are set up.
func (vm *VM) readPorts(t TB) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	var out string
	for {
		var err error
		if out, err = vm.monitorCommand("info usernet"); err == nil {
			break
		}
		select {
		case <-vm.exited:
			vm.failT(t, "QEMU exited (%v) before its monitor answered: %v", vm.err, err)
		default:
		}
		if time.Now().After(deadline) {
			vm.failT(t, "reading the forwarded ports from QEMU's monitor: %v", err)
		}
		time.Sleep(10 * time.Millisecond) // the socket appears once QEMU has started
	}
	for _, m := range hostForward.FindAllStringSubmatch(out, -1) {
		host, _ := strconv.Atoi(m[1])
		guest, _ := strconv.Atoi(m[2])
		vm.ports[guest] = host
	}
	for _, gp := range vm.opts.Forward {
		if vm.ports[gp] == 0 {
			vm.failT(t, "QEMU's monitor shows no host port for guest port %d:\n%s", gp, out)
		}
	}
	if !vm.opts.Quiet {
		t.Logf("port forwards (guest → host): %v", vm.ports)
	}
}
