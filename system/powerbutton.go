package system

import (
	"encoding/binary"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
)

// Linux input events (linux/input.h) on x86-64: struct timeval (16 bytes), type, code, value.
const (
	inputEventSize = 24
	evKey          = 1
	keyPower       = 116
)

// WatchPowerButton calls press when an ACPI power button is pressed (QEMU's system_powerdown,
// a hypervisor's "shut down", the button on the box), as systemd-logind does with
// HandlePowerKey=poweroff. It needs the button and evdev modules; it reports how many buttons
// it watches.
func WatchPowerButton(log *slog.Logger, press func()) int {
	devs, _ := filepath.Glob("/sys/class/input/event*")
	n := 0
	for _, d := range devs {
		name, _ := os.ReadFile(filepath.Join(d, "device/name"))
		if strings.TrimSpace(string(name)) != "Power Button" {
			continue
		}
		f, err := os.Open("/dev/input/" + filepath.Base(d))
		if err != nil {
			log.Warn("power button not watched", "device", filepath.Base(d), "err", err)
			continue
		}
		n++
		go func() {
			defer Recover(log, "power button")
			defer f.Close()
			buf := make([]byte, inputEventSize*16)
			for {
				k, err := f.Read(buf)
				if err != nil {
					return
				}
				for off := 0; off+inputEventSize <= k; off += inputEventSize {
					ev := buf[off : off+inputEventSize]
					typ, code := binary.LittleEndian.Uint16(ev[16:]), binary.LittleEndian.Uint16(ev[18:])
					if typ == evKey && code == keyPower && binary.LittleEndian.Uint32(ev[20:]) == 1 {
						Contain(log, "power button press", press) // the next press must still work
					}
				}
			}
		}()
	}
	return n
}
