// Command web is the demo appliance's HTTP service: GET / answers with its version and pid.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
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
	addr := flag.String("addr", ":80", "listen address")
	flag.Parse()
	greeting := os.Getenv("GREETING")
	if greeting == "" {
		greeting = "hello"
	}
	host, _ := os.Hostname()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s from baton demo web %s pid %d on %s\n", greeting, version, os.Getpid(), host)
	})
	srv := &http.Server{Addr: *addr, Handler: mux, ReadHeaderTimeout: 5 * time.Second}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdown)
	}()
	l, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatalf("web: %v", err)
	}
	log.Printf("web %s listening on %s", version, *addr)
	// Ready only once the socket accepts: baton's "initctl restart web" returns at this point.
	if err := client.Ready(); err != nil {
		log.Printf("web: %v", err)
	}
	_ = client.Status("serving on " + *addr)
	if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Fatalf("web: %v", err)
	}
}
