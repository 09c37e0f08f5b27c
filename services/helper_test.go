package services

import (
	"os"
	"time"

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
	}
	select {}
}

func helperExec(mode string) ([]string, []string) {
	exe, _ := os.Executable()
	return []string{exe}, []string{"BATON_TEST_HELPER=" + mode}
}
