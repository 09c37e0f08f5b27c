package services

import (
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/baton-init/baton/handoff/client"
)

// The test binary doubles as a service: with BATON_TEST_HELPER set, TestMain runs helper
// instead of the tests. Go code, not a shell script, so the notify protocol is spoken by the
// same client library services link.
func helper(mode string) {
	switch mode {
	case "notify-ready": // ready after a short setup
		time.Sleep(150 * time.Millisecond)
		client.Status("warming up done")
		client.Ready()
	case "notify-after-file": // ready once the test creates $READY_FILE
		for {
			if _, err := os.Stat(os.Getenv("READY_FILE")); err == nil {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		client.Ready()
	case "notify-never":
	case "fdstore": // keep a memfd in baton's store; after a restart, find it again
		if f := client.Stored("memo"); len(f) == 1 {
			b := make([]byte, 64)
			n, _ := f[0].ReadAt(b, 0)
			fmt.Printf("found: %s\n", b[:n])
		} else {
			fd, _ := unix.MemfdCreate("memo", 0)
			memo := os.NewFile(uintptr(fd), "memo")
			fmt.Fprintf(memo, "stored by pid %d", os.Getpid())
			if err := client.Store("memo", memo, false); err != nil {
				fmt.Println("store:", err)
			}
			fmt.Println("stored")
		}
		client.Ready()
	case "listenfds": // what the listen-fd protocol gave
		pidOK := os.Getenv("LISTEN_PID") == strconv.Itoa(os.Getpid())
		fmt.Printf("fds=%s names=%s pid_ok=%v\n", os.Getenv("LISTEN_FDS"), os.Getenv("LISTEN_FDNAMES"), pidOK)
		ls, _ := client.Listeners()
		fmt.Printf("listeners=%d\n", len(ls))
		client.Ready()
	case "exit1":
		os.Exit(1)
	case "model":
		modelService()
	case "reload":
		reloadHelper()
	case "stopping-on-term": // ready at once; on SIGTERM says STOPPING=1, then exits
		term := make(chan os.Signal, 1)
		signal.Notify(term, unix.SIGTERM)
		client.Ready()
		<-term
		client.Stopping()
		os.Exit(0)
	case "notify-send": // sends each of $NOTIFY_MSGS ("|"-separated; \n for a newline) in order
		fmt.Println("started with WATCHDOG_USEC=" + os.Getenv("WATCHDOG_USEC"))
		for _, m := range strings.Split(os.Getenv("NOTIFY_MSGS"), "|") {
			if err := client.Notify(strings.ReplaceAll(m, `\n`, "\n")); err != nil {
				fmt.Println("notify:", err)
			}
		}
		fmt.Println("sent")
	case "env": // prints its environment, then stays up
		for _, kv := range os.Environ() {
			fmt.Println("env:", kv)
		}
		fmt.Println("env: end")
		client.Ready()
	}
	select {}
}

func helperExec(mode string) ([]string, []string) {
	exe, _ := os.Executable()
	return []string{exe}, []string{"BATON_TEST_HELPER=" + mode}
}

// reloadHelper is a notify service that reloads on SIGHUP as systemd's Type=notify-reload
// expects: RELOADING=1, then READY=1 — or, with $RELOAD_FAILS set, never READY=1 again.
func reloadHelper() {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, unix.SIGHUP)
	client.Ready()
	for range hup {
		client.Notify("RELOADING=1")
		fmt.Println("reloading")
		if os.Getenv("RELOAD_FAILS") == "" {
			time.Sleep(50 * time.Millisecond)
			client.Notify("READY=1")
		}
	}
}
