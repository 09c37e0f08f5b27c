// Package reexec is what a PID 1 re-exec hands from one process image to the next: the state,
// in a versioned, length-checked envelope in a memfd, and the fds it names, kept open across
// execve. The wiring (trial run, freeze, execve, fail-safe) is in init/reexec.go; the
// services' part of the state is services.Saved.
package reexec

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/baton-init/baton/services"
)

// Version is the state format this binary writes and reads. A binary that reads another
// version refuses the state, and the re-exec fails safe (the trial run catches it first).
var Version uint32 = 1

// The envelope: magic, version, payload length, SHA-256 of the payload, payload (JSON). The
// length and digest are checked before a byte of the payload is parsed, so a truncated or
// damaged state is refused whole, never half read (systemd's CVE-2018-15686 came from a
// line-oriented state where an over-long line became two).
const (
	magic      = "BATONST\x00"
	headerSize = len(magic) + 4 + 8 + sha256.Size
	// MaxSize bounds what a decoder reads: log tails of a thousand services fit.
	MaxSize = 256 << 20
)

// State is everything the next process image needs.
type State struct {
	ID       string         `json:"id"`        // the re-exec's id, as initctl reexec reported it
	FromExe  string         `json:"from_exe"`  // digest of the binary that wrote the state
	PrevFd   int            `json:"prev_fd"`   // memfd of that binary: the fail-safe
	FrozenAt int64          `json:"frozen_at"` // CLOCK_BOOTTIME ns when the services froze
	Fds      []int          `json:"fds"`       // every fd below, kept across execve
	Services services.Saved `json:"services"`
	// Control and Remote are the control API's listeners (-1 for none).
	Control int `json:"control"`
	Remote  int `json:"remote"`
	// Mode-specific state (init's machine, or the subreaper's), opaque here.
	Machine json.RawMessage `json:"machine,omitempty"`
	// Trial: a copy for the trial run; its fds are this process's, not to be used.
	Trial bool `json:"trial,omitempty"`
}

// Encode writes the envelope.
func Encode(st *State) ([]byte, error) {
	payload, err := json.Marshal(st)
	if err != nil {
		return nil, fmt.Errorf("encode state: %w", err)
	}
	var b bytes.Buffer
	b.Grow(headerSize + len(payload))
	b.WriteString(magic)
	_ = binary.Write(&b, binary.LittleEndian, Version)
	_ = binary.Write(&b, binary.LittleEndian, uint64(len(payload)))
	sum := sha256.Sum256(payload)
	b.Write(sum[:])
	b.Write(payload)
	return b.Bytes(), nil
}

// ErrVersion is a state of a version this binary does not read.
var ErrVersion = errors.New("unknown state version")

// Decode checks and parses the envelope, then the state's own consistency.
func Decode(data []byte) (*State, error) {
	if len(data) < headerSize {
		return nil, fmt.Errorf("state: %d bytes, shorter than its header (%d)", len(data), headerSize)
	}
	if string(data[:len(magic)]) != magic {
		return nil, errors.New("state: not a baton state (bad magic)")
	}
	off := len(magic)
	v := binary.LittleEndian.Uint32(data[off:])
	if v != Version {
		return nil, fmt.Errorf("%w %d (this binary reads version %d)", ErrVersion, v, Version)
	}
	off += 4
	n := binary.LittleEndian.Uint64(data[off:])
	off += 8
	if n > MaxSize || n != uint64(len(data)-headerSize) {
		return nil, fmt.Errorf("state: payload length %d, but %d bytes follow the header", n, len(data)-headerSize)
	}
	want := data[off : off+sha256.Size]
	payload := data[headerSize:]
	if sum := sha256.Sum256(payload); !bytes.Equal(sum[:], want) {
		return nil, errors.New("state: payload digest mismatch (damaged)")
	}
	var st State
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&st); err != nil {
		return nil, fmt.Errorf("state: %w", err)
	}
	if dec.More() {
		return nil, errors.New("state: data after the state")
	}
	if err := st.check(); err != nil {
		return nil, err
	}
	return &st, nil
}

// check: the services' state is consistent, and every fd it names (with the listeners and
// the previous binary) is listed in Fds, once.
func (st *State) check() error {
	if err := st.Services.Check(); err != nil {
		return err
	}
	if len(st.Fds) > 1<<16 {
		return fmt.Errorf("state: %d fds", len(st.Fds))
	}
	listed := map[int]bool{}
	for _, fd := range st.Fds {
		if fd < 3 || listed[fd] {
			return fmt.Errorf("state: fd %d listed twice or below 3", fd)
		}
		listed[fd] = true
	}
	if st.Trial {
		return nil
	}
	named := st.Services.Fds()
	for _, fd := range []int{st.Control, st.Remote, st.PrevFd} {
		if fd != -1 {
			named = append(named, fd)
		}
	}
	for _, fd := range named {
		if !listed[fd] {
			return fmt.Errorf("state: fd %d is named but not among the fds kept", fd)
		}
	}
	return nil
}
