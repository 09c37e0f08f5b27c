package services

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/baton-init/baton/system"
)

// LogLine is one line a service wrote.
type LogLine struct {
	Seq    uint64    `json:"seq"`
	Time   time.Time `json:"time"`
	Stream string    `json:"stream"` // stdout or stderr
	Text   string    `json:"text"`
}

// LogRing keeps the last lines of a service in memory. Followers wait on Changed, which is
// closed and replaced on every new line.
type LogRing struct {
	mu      sync.Mutex
	lines   []LogLine // circular once full
	start   int
	next    uint64
	changed chan struct{}
	// sink also gets every line (the persistent journal); it must not block. Set before the
	// service's pipes are read, never changed after.
	sink func(LogLine)
}

// DefaultLogLines is how many lines each service keeps.
const DefaultLogLines = 1000

// maxLineLen splits longer lines, so one runaway line cannot hold a whole buffer.
const maxLineLen = 4096

func newLogRing(capacity int) *LogRing {
	return &LogRing{lines: make([]LogLine, 0, capacity), changed: make(chan struct{}), next: 1}
}

func (r *LogRing) add(stream, text string) LogLine {
	r.mu.Lock()
	defer r.mu.Unlock()
	l := LogLine{Seq: r.next, Time: time.Now(), Stream: stream, Text: text}
	r.next++
	if len(r.lines) < cap(r.lines) {
		r.lines = append(r.lines, l)
	} else {
		r.lines[r.start] = l
		r.start = (r.start + 1) % len(r.lines)
	}
	close(r.changed)
	r.changed = make(chan struct{})
	if r.sink != nil {
		r.sink(l)
	}
	return l
}

// Since returns the lines with Seq > after (all kept lines for 0), oldest first, and a
// channel closed when a newer line arrives.
func (r *LogRing) Since(after uint64) ([]LogLine, <-chan struct{}) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []LogLine
	for i := 0; i < len(r.lines); i++ {
		l := r.lines[(r.start+i)%len(r.lines)]
		if l.Seq > after {
			out = append(out, l)
		}
	}
	return out, r.changed
}

// Tail returns the last n lines (all for n <= 0).
func (r *LogRing) Tail(n int) []LogLine {
	all, _ := r.Since(0)
	if n > 0 && len(all) > n {
		all = all[len(all)-n:]
	}
	return all
}

// logPipe is one output stream of a service: the write end goes to every run of the service
// (and so to everything it starts), the read end is drained into the ring and the console.
type logPipe struct {
	r, w   *os.File
	name   string
	stream string
	ring   *LogRing
	con    *console
	done   chan struct{} // closed when the reader returned (EOF, or paused for a re-exec)
}

func startLogPipe(name, stream string, ring *LogRing, con *console) (*logPipe, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("service %s: %s pipe: %w", name, stream, err)
	}
	p := &logPipe{r: r, w: w, name: name, stream: stream, ring: ring, con: con}
	p.read()
	return p, nil
}

// read drains the pipe from a goroutine until EOF, or until a read deadline pauses it
// (pauseReading, for a re-exec): then the read end stays open for the next reader.
func (p *logPipe) read() {
	p.done = make(chan struct{})
	go func() {
		defer close(p.done)
		br := bufio.NewReaderSize(p.r, maxLineLen)
		for {
			line, err := readLine(br)
			if line != "" || err == nil {
				p.ring.add(p.stream, line)
				p.con.echo(p.name, line)
			}
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return
			}
			if err != nil {
				p.r.Close()
				return
			}
		}
	}()
}

// close closes baton's write end; the reader ends once no process holds one either.
func (p *logPipe) close() {
	if p != nil {
		p.w.Close()
	}
}

// console echoes service output to baton's console from one goroutine, through a bounded
// queue: a slow serial console delays the echo, never a service (whose pipe would fill and
// block its writes) and never the other services. Lines that do not fit are counted and the
// count is reported; the ring keeps every line regardless.
type console struct {
	out     io.Writer
	log     *slog.Logger
	lines   chan string
	dropped atomic.Int64
	stop    chan struct{}
	once    sync.Once
}

const consoleQueue = 1024

func newConsole(out io.Writer, log *slog.Logger) *console {
	c := &console{out: out, log: log, lines: make(chan string, consoleQueue), stop: make(chan struct{})}
	go c.write()
	return c
}

func (c *console) echo(name, line string) {
	if c == nil {
		return
	}
	select {
	case c.lines <- fmt.Sprintf("[%10.6f] %s: %s\n", system.Uptime().Seconds(), name, system.EscapeControls(line)):
	default:
		c.dropped.Add(1)
	}
}

func (c *console) write() {
	for {
		select {
		case l := <-c.lines:
			writeLine(c.out, l)
		case <-c.stop:
			return
		}
		if n := c.dropped.Swap(0); n > 0 {
			writeLine(c.out, fmt.Sprintf("[%10.6f] baton: console too slow: %d service line(s) not echoed (initctl logs has them)\n", system.Uptime().Seconds(), n))
		}
	}
}

// writeLine writes, and survives a writer that panics (a closed console must not end the
// echo goroutine, nor baton).
func writeLine(w io.Writer, l string) {
	defer func() { _ = recover() }()
	_, _ = io.WriteString(w, l)
}

func (c *console) close() { c.once.Do(func() { close(c.stop) }) }

// readLine returns the next line without its newline; a line longer than the buffer comes
// back in pieces.
func readLine(br *bufio.Reader) (string, error) {
	b, err := br.ReadSlice('\n')
	if err == bufio.ErrBufferFull {
		return string(b), nil
	}
	if n := len(b); n > 0 && b[n-1] == '\n' {
		b = b[:n-1]
	}
	return string(b), err
}
