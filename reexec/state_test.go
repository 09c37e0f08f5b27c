package reexec

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/baton-init/baton/config"
	"github.com/baton-init/baton/handoff"
	"github.com/baton-init/baton/services"
)

func sample(t testing.TB) *State {
	t.Helper()
	cfg, err := config.Parse("baton.toml", []byte(`
[[service]]
name = "web"
exec = ["/bin/web", "-v"]
ready = "notify"
stop_timeout = "3s"
fdstore_max = 4
  [[service.socket]]
  name = "http"
  listen = "tcp://127.0.0.1:8080"
`))
	if err != nil {
		t.Fatal(err)
	}
	ss := services.SavedService{Spec: cfg.Service[0], Phase: "running", Cur: 0,
		Gens:   []services.SavedGen{{Pid: 1234, Pgid: 1234, Exec: "/bin/web", Started: 5e9, Ctl: 10}},
		Held:   []services.SavedSocket{{Name: "http", Fd: 11}},
		Store:  []handoff.SavedFD{{Name: "state", Fd: 12, Poll: true}},
		Notify: &services.SavedNotify{Path: "/run/baton/notify/web", Fd: 13},
		Stdout: services.SavedPipe{R: 14, W: 15}, Stderr: services.SavedPipe{R: 16, W: 17},
		Logs: []services.LogLine{{Seq: 1, Time: time.Unix(1700000000, 0).UTC(), Stream: "stdout", Text: "hello"}}, LogNext: 2,
		Deadline: 9e9, Backoff: int64(time.Second), Restarts: 2, LastEndStatus: -1}
	return &State{ID: "abcd", FromExe: "00", PrevFd: 18, FrozenAt: 7e9, Control: 19, Remote: -1,
		Fds:      []int{10, 11, 12, 13, 14, 15, 16, 17, 18, 19},
		Services: services.Saved{Services: []services.SavedService{ss}}, Machine: json.RawMessage(`{"reexecs":1,"mode":{}}`)}
}

func TestStateRoundTrip(t *testing.T) {
	st := sample(t)
	data, err := Encode(st)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Decode(data)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, st) {
		t.Errorf("decoded state differs:\n got %+v\nwant %+v", got, st)
	}
}

func TestStateRefused(t *testing.T) {
	good, _ := Encode(sample(t))
	bad := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), good...)) }
	dupFd := sample(t)
	dupFd.Services.Services[0].Held[0].Fd = 10 // also the control channel
	dup, _ := Encode(dupFd)
	unlisted := sample(t)
	unlisted.Fds = unlisted.Fds[1:]
	unl, _ := Encode(unlisted)
	badPid := sample(t)
	badPid.Services.Services[0].Gens[0].Pid = 1
	bp, _ := Encode(badPid)
	for _, c := range []struct {
		name string
		data []byte
		want string
	}{
		{"empty", nil, "shorter than its header"},
		{"magic", bad(func(b []byte) []byte { b[0] = 'X'; return b }), "bad magic"},
		{"version", bad(func(b []byte) []byte { b[8] = 2; return b }), "unknown state version 2"},
		{"truncated", good[:len(good)-1], "payload length"},
		{"longer", append(append([]byte(nil), good...), '\n'), "payload length"},
		{"damaged", bad(func(b []byte) []byte { b[len(b)-2] ^= 1; return b }), "digest mismatch"},
		{"fd twice", dup, "is also"},
		{"fd not kept", unl, "not among the fds kept"},
		{"pid 1", bp, "out of range"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := Decode(c.data)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("Decode: %v, want an error with %q", err, c.want)
			}
			if c.name == "version" && !errors.Is(err, ErrVersion) {
				t.Errorf("not ErrVersion: %v", err)
			}
		})
	}
}

// The config survives JSON (the state carries services' configs and the machine's).
func TestConfigRoundTripsThroughJSON(t *testing.T) {
	cfg, err := config.Load("../examples/baton.toml")
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var back config.Config
	if err := json.NewDecoder(bytes.NewReader(b)).Decode(&back); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(*cfg, back) {
		t.Errorf("config differs after JSON:\n got %+v\nwant %+v", back, *cfg)
	}
}

// FuzzDecode: no input makes the decoder panic, and what it accepts encodes back to a state
// it accepts again.
func FuzzDecode(f *testing.F) {
	good, _ := Encode(sample(f))
	f.Add(good)
	f.Add(good[:len(good)/2])
	f.Add([]byte(magic))
	f.Fuzz(func(t *testing.T, data []byte) {
		st, err := Decode(data)
		if err != nil {
			return
		}
		again, err := Encode(st)
		if err != nil {
			t.Fatalf("encode an accepted state: %v", err)
		}
		if _, err := Decode(again); err != nil {
			t.Fatalf("a re-encoded accepted state is refused: %v", err)
		}
	})
}
