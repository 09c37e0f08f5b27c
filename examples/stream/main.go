// Command stream is the demo's long-lived-connection service: a line counter. Each client line
// is answered with "N: line", N counting the lines of that connection. During an upgrade the
// old version hands each live connection, with its count and any half-read line, to the new
// version: the client stays connected and the count goes on.
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/baton-init/baton/handoff/client"
)

var version = "dev"

// state is what moves with a connection: the count, and bytes read but not yet answered.
type state struct {
	Count   int    `json:"count"`
	Pending []byte `json:"pending,omitempty"`
}

type server struct {
	draining atomic.Bool
	mu       sync.Mutex
	conns    map[net.Conn]bool
	wg       sync.WaitGroup
	handoff  *client.Sender
	moved    atomic.Int64
}

func main() {
	addr := flag.String("addr", ":9000", "listen address when baton passes no socket")
	flag.Parse()
	if v := os.Getenv("STREAM_VERSION"); v != "" {
		version = v
	}
	s := &server{conns: map[net.Conn]bool{}}
	l, err := client.Listener("stream", "tcp", *addr)
	if err != nil {
		log.Fatalf("stream: %v", err)
	}
	adopted := 0
	inherited := client.Inherited()
	go func() {
		for a := range inherited {
			var st state
			_ = json.Unmarshal(a.State, &st)
			adopted++
			s.serve(a.Conn, st)
		}
		if adopted > 0 {
			log.Printf("stream %s: adopted %d connections", version, adopted)
		}
	}()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			s.serve(c, state{})
		}
	}()
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	if err := client.Ready(); err != nil {
		log.Printf("stream: %v", err)
	}
	_ = client.Status("counting lines on " + l.Addr().String())
	log.Printf("stream %s pid %d serving on %s", version, os.Getpid(), l.Addr())
	<-stop
	_ = client.Stopping()
	l.Close()
	s.drain()
}

func (s *server) serve(c net.Conn, st state) {
	s.mu.Lock()
	if s.draining.Load() {
		s.mu.Unlock()
		s.pass(c, st) // arrived while draining: straight on to the next version
		return
	}
	s.conns[c] = true
	s.wg.Add(1)
	s.mu.Unlock()
	go s.handle(c, st)
}

// handle answers lines until the client leaves or a drain interrupts the read.
func (s *server) handle(c net.Conn, st state) {
	defer s.wg.Done()
	r := bufio.NewReader(io.MultiReader(strings.NewReader(string(st.Pending)), c))
	st.Pending = nil
	for {
		line, err := r.ReadString('\n')
		if err == nil {
			st.Count++
			if _, werr := fmt.Fprintf(c, "%d: %s", st.Count, line); werr != nil {
				err = werr
			}
		}
		if err != nil {
			var ne net.Error
			if s.draining.Load() && errors.As(err, &ne) && ne.Timeout() {
				// Interrupted for the handoff: keep what was read and not yet answered.
				rest, _ := r.Peek(r.Buffered())
				st.Pending = append([]byte(line), rest...)
				s.forget(c)
				s.pass(c, st)
				return
			}
			s.forget(c)
			c.Close()
			return
		}
	}
}

func (s *server) forget(c net.Conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

// pass sends c to the next version, or closes it when there is none (a plain stop).
func (s *server) pass(c net.Conn, st state) {
	if s.handoff == nil {
		c.Close()
		return
	}
	_ = c.SetReadDeadline(time.Time{})
	blob, _ := json.Marshal(st)
	if err := s.handoff.Send(c.(syscall.Conn), blob); err != nil {
		log.Printf("stream: handoff: %v", err)
		c.Close()
		return
	}
	s.moved.Add(1)
}

// drain interrupts every connection's read; each handler then passes its connection on.
func (s *server) drain() {
	s.handoff = client.Successor()
	s.mu.Lock()
	s.draining.Store(true)
	for c := range s.conns {
		_ = c.SetReadDeadline(time.Now())
	}
	s.mu.Unlock()
	s.wg.Wait()
	if s.handoff != nil {
		s.handoff.Close()
		log.Printf("stream %s pid %d: handed %d connections to the next version", version, os.Getpid(), s.moved.Load())
	}
}
