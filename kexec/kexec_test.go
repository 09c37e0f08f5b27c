package kexec

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestReuseDropsOneShotParams(t *testing.T) {
	in := []string{"BOOT_IMAGE=/vmlinuz", "console=ttyS0", "baton.prev=stop:12", "baton.once.marker=1", "quiet", "initrd=/x", "note=two words"}
	want := []string{"console=ttyS0", "quiet", "note=two words"}
	if got := Reuse(in); !reflect.DeepEqual(got, want) {
		t.Errorf("Reuse = %q, want %q", got, want)
	}
	if got := Join(want); got != `console=ttyS0 quiet note="two words"` {
		t.Errorf("Join = %s", got)
	}
}

// The fast method's memmap= goes with its baton.spared=; a memmap= of the user's stays, even
// when a baton.spared= names another.
func TestReuseDropsTheSparedMemmap(t *testing.T) {
	ours := sparedParams([]pageRange{{0x100, 0x10}, {0x3000, 0x200}})
	if want := []string{"memmap=0x10000$0x100000,0x200000$0x3000000", "baton.spared=" + sparedTag("0x10000$0x100000,0x200000$0x3000000")}; !reflect.DeepEqual(ours, want) {
		t.Fatalf("sparedParams = %q, want %q", ours, want)
	}
	in := append([]string{"console=ttyS0", "memmap=64M$0x10000000"}, ours...)
	want := []string{"console=ttyS0", "memmap=64M$0x10000000"}
	if got := Reuse(in); !reflect.DeepEqual(got, want) {
		t.Errorf("Reuse = %q, want %q", got, want)
	}
	if got := Reuse([]string{"memmap=64M$0x10000000", "baton.spared=00000000"}); !reflect.DeepEqual(got, want[1:]) {
		t.Errorf("Reuse dropped the user's memmap=: %q", got)
	}
	if sparedParams(nil) != nil {
		t.Error("no holes, yet parameters")
	}
}

func TestErrorsSayWhatToDo(t *testing.T) {
	for errno, want := range map[unix.Errno]string{
		unix.ENOEXEC: "not a kernel", unix.EPERM: "kexec_load_disabled", unix.EKEYREJECTED: "signature",
		unix.EBADMSG: "signature", unix.ENOSYS: "CONFIG_KEXEC_FILE", unix.ENOMEM: "stop services and retry", unix.EBUSY: "retry",
	} {
		err := callError("kexec_file_load(/boot/x, no initrd, \"\", 0x2)", errno)
		var ke *Error
		if !errors.As(err, &ke) || !errors.Is(err, errno) || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "/boot/x") {
			t.Errorf("%v: %v", errno, err)
		}
	}
}

func TestLoadRefusesWhatIsNotAKernel(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("kexec_file_load needs CAP_SYS_BOOT")
	}
	// Not a bzImage: the kernel refuses it (ENOEXEC), or refuses kexec here at all (EPERM in a
	// container, ENOSYS): each is an Error naming the file and saying what to do.
	notKernel := filepath.Join(t.TempDir(), "vmlinuz")
	os.WriteFile(notKernel, []byte("this is not a kernel"), 0o644)
	err := Load(Image{Kernel: notKernel, Cmdline: "console=ttyS0"})
	var ke *Error
	if !errors.As(err, &ke) || ke.Hint == "" || !strings.Contains(err.Error(), notKernel) {
		t.Fatalf("Load(not a kernel) = %v", err)
	}
	t.Logf("refused as expected: %v", err)
	if err := Load(Image{Kernel: filepath.Join(t.TempDir(), "missing")}); err == nil || !strings.Contains(err.Error(), "kernel: open") {
		t.Errorf("missing kernel: %v", err)
	}
}
