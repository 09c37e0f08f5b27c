// Command web is the demo appliance's HTTP service: GET / answers with its version and pid.
// Under baton it serves on the socket baton holds ("http"), so an upgrade refuses nothing.
package main

import (
	"flag"
	"fmt"
	"log"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/baton-init/baton/handoff/client"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

func main() {
	addr := flag.String("addr", ":80", "listen address when baton passes no socket")
	flag.Parse()
	greeting := os.Getenv("GREETING")
	if greeting == "" {
		greeting = "hello"
	}
	if v := os.Getenv("WEB_VERSION"); v != "" {
		version = v
	}
	host, _ := os.Hostname()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s from baton demo web %s pid %d on %s\n", greeting, version, os.Getpid(), host)
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}

	l, err := client.Listener("http", "tcp", *addr)
	if err != nil {
		log.Fatalf("web: %v", err)
	}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	hs := client.ServeHTTP(srv, l)
	log.Printf("web %s serving on %s", version, l.Addr())
	// Ready only once the socket accepts: "initctl restart web" and upgrades wait for this.
	if err := client.Ready(); err != nil {
		log.Printf("web: %v", err)
	}
	_ = client.Status("serving on " + l.Addr().String())

	select {
	case <-stop:
	case err := <-hs.Done():
		log.Fatalf("web: serve: %v", err)
	}
	// Stop accepting here (the socket stays open in baton and in the next version, so new
	// clients queue there) and answer every request already accepted.
	_ = client.Stopping()
	if err := hs.Drain(5 * time.Second); err != nil {
		log.Printf("web: %v", err)
	}
	log.Printf("web %s pid %d drained", version, os.Getpid())
}
