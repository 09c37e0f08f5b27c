package config

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

// Configs written by a hostile or broken neighbour: they must be refused quickly, with short
// errors that still name file and line.

func unknownKeysDoc(n int) []byte {
	var b strings.Builder
	b.WriteString("hostname = \"demo\"\n")
	for i := 0; i < n; i++ {
		fmt.Fprintf(&b, "unknown_key_%d = 1\n", i)
	}
	return []byte(b.String())
}

func TestUnknownKeysLinear(t *testing.T) {
	// Quadratic before (16,000 keys took 46 s on the machine); the bound is generous
	// so a loaded machine cannot fail it, the figure is logged.
	for _, n := range []int{16000, 100000} {
		doc := unknownKeysDoc(n)
		start := time.Now()
		_, err := Parse("f.toml", doc)
		took := time.Since(start)
		t.Logf("%d unknown keys (%d bytes): refused in %v, error of %d bytes", n, len(doc), took, len(err.Error()))
		if took > 5*time.Second {
			t.Errorf("%d unknown keys took %v", n, took)
		}
		msg := err.Error()
		for _, want := range []string{"f.toml:2: unknown_key_0: unknown key", fmt.Sprintf("and %d more unknown keys", n-MaxErrors)} {
			if !strings.Contains(msg, want) {
				t.Errorf("error does not contain %q:\n%.500s", want, msg)
			}
		}
		if lines := strings.Count(msg, "\n") + 1; lines != MaxErrors+1 {
			t.Errorf("error has %d lines, want %d", lines, MaxErrors+1)
		}
	}
}

func TestLargeValidConfigFast(t *testing.T) {
	// 2 MB of valid keys and one validation error at the end: locating that error must not
	// rescan the file per key.
	var b strings.Builder
	b.WriteString("[[service]]\nname = \"a\"\nexec = [\"/a\"]\n")
	for b.Len() < 2<<20 {
		b.WriteString("env = [\"A=1\"]\n# padding padding padding padding padding padding padding\n")
	}
	// Duplicate keys are a syntax-level error; use many services instead.
	var c strings.Builder
	for i := 0; c.Len() < 2<<20; i++ {
		fmt.Fprintf(&c, "[[mount]]\nsource = \"LABEL=B%d\"\ntarget = \"/m%d\"\ntype = \"vfat\"\n", i, i)
	}
	c.WriteString("[kexec]\nkernel = \"vmlinuz\"\n")
	start := time.Now()
	_, err := Parse("f.toml", []byte(c.String()))
	took := time.Since(start)
	t.Logf("%d bytes: answered in %v", c.Len(), took)
	if err == nil || !strings.Contains(err.Error(), "kexec.kernel") {
		t.Fatalf("err = %v", err)
	}
	// Quadratic rescanning (one pass over the file per key, ~35,000 keys) takes minutes; the
	// linear parse about a second, 15 s on a machine loaded far past its two cores. The bound
	// only tells the two apart; speed itself is for benchmarks.
	if took > 90*time.Second {
		t.Errorf("2 MB config took %v", took)
	}
}

func TestUnknownKeysEverywhere(t *testing.T) {
	for _, tc := range []struct {
		name, doc string
		want      []string
	}{
		{"unknown table", "[nope]\nx = 1\ny = 2\n", []string{"f.toml:1: nope: unknown key"}},
		{"unknown key in a sub-table", "[[service]]\nname = \"a\"\nexec = [\"/a\"]\n[[service.socket]]\nlisten = \"tcp://:80\"\nbaclog = 3\n",
			[]string{"f.toml:6: service.socket.baclog: unknown key"}},
		{"dotted key", "[[service]]\nname = \"a\"\nexec = [\"/a\"]\nsocket.x = 1\n", []string{"f.toml:4: service.socket.x"}},
		{"inline table", "[[service]]\nname = \"a\"\nexec = [\"/a\"]\nsocket = [{listen = \"tcp://:80\", lisen = \"x\"}]\n",
			[]string{"f.toml:4: service.socket.lisen: unknown key"}},
		{"inline top-level table", "control = {remote = \"1.2.3.4:5\", remot = \"x\"}\n", []string{"f.toml:1: control.remot"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("f.toml", []byte(tc.doc))
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
	// Keys the decoder accepts are not unknown: a value under a leaf, case-insensitive names.
	for _, doc := range []string{
		"[[service]]\nname = \"a\"\nexec = [\"/a\"]\nstop_timeout = \"3s\"\n[[service.socket]]\nlisten = \"tcp://:80\"\nv6only = true\n",
		"HOSTNAME = \"demo\"\n",
	} {
		if _, err := Parse("f.toml", []byte(doc)); err != nil {
			t.Errorf("Parse(%q): %v", doc, err)
		}
	}
}

func TestErrorsQuoteValuesShort(t *testing.T) {
	big := strings.Repeat("x", 50<<20)
	for _, tc := range []struct{ name, doc string }{
		{"hostname", "hostname = \"" + big + "\"\n"},
		{"duration", "[[service]]\nname = \"a\"\nexec = [\"/a\"]\nstop_timeout = \"" + big + "\"\n"},
		{"listen", "[[service]]\nname = \"a\"\nexec = [\"/a\"]\n[[service.socket]]\nlisten = \"tcp://" + big + "\"\n"},
		{"key", big[:1<<20] + " = 1\n"},
		{"exec", "[[service]]\nname = \"a\"\nexec = [\"" + big + "\"]\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("f.toml", []byte(tc.doc))
			if err == nil {
				t.Fatal("accepted")
			}
			msg := err.Error()
			t.Logf("%d-byte value: %d-byte error: %.200s", len(tc.doc), len(msg), msg)
			if len(msg) > 1000 {
				t.Errorf("error is %d bytes", len(msg))
			}
			if tc.name != "key" && !strings.Contains(msg, "bytes)") {
				t.Errorf("error does not give the value's length: %s", msg)
			}
		})
	}
	if got := quote("héllo"); got != `"héllo"` {
		t.Errorf("quote = %s", got)
	}
	long := strings.Repeat("é", 100)
	if got := quote(long); !strings.HasSuffix(got, "… (200 bytes)") || strings.Contains(got, `\x`) {
		t.Errorf("quote cut a rune: %s", got)
	}
}

func TestValidationGaps(t *testing.T) {
	svc := "[[service]]\nname = \"a\"\n"
	for _, tc := range []struct {
		name, doc string
		want      []string
	}{
		{"NUL in exec", svc + "exec = [\"/bin/a\\u0000b\"]\n", []string{"f.toml:3:", "service[0].exec", "NUL"}},
		{"NUL in an argument", svc + "exec = [\"/bin/a\", \"-x\\u0000\"]\n", []string{"f.toml:3:", "NUL"}},
		{"NUL in dir", svc + "exec = [\"/bin/a\"]\ndir = \"/tmp\\u0000x\"\n", []string{"f.toml:4:", "service[0].dir", "NUL"}},
		{"NUL in a socket path", svc + "exec = [\"/bin/a\"]\n[[service.socket]]\nlisten = \"unix:///run/a\\u0000b\"\n",
			[]string{"f.toml:5:", "service[0].socket[0].listen", "NUL"}},
		{"NUL in user", svc + "exec = [\"/bin/a\"]\nuser = \"no\\u0000body\"\n", []string{"f.toml:4:", "NUL"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("f.toml", []byte(tc.doc))
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}

	t.Run("too many services", func(t *testing.T) {
		var b strings.Builder
		for i := 0; i <= MaxServices; i++ {
			fmt.Fprintf(&b, "[[service]]\nname = \"s%d\"\nexec = [\"/bin/s\"]\n", i)
		}
		_, err := Parse("f.toml", []byte(b.String()))
		if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("f.toml:%d: service[%d]: %d services; at most %d", 3*MaxServices+1, MaxServices, MaxServices+1, MaxServices)) {
			t.Errorf("err = %v", err)
		}
	})

	t.Run("unknown user and group", func(t *testing.T) {
		known := map[string]bool{"nobody": true, "nogroup": true, "0": true}
		lookup := func(kind string) func(string) error {
			return func(name string) error {
				if known[name] {
					return nil
				}
				return fmt.Errorf("%s %q: unknown (is it in the image's /etc/%s?)", kind, name, kind)
			}
		}
		acct := Accounts{User: lookup("passwd"), Group: lookup("group")}
		doc := svc + "exec = [\"/bin/a\"]\nuser = \"nobody\"\n" +
			"[[service]]\nname = \"b\"\nexec = [\"/bin/b\"]\nuser = \"ghost\"\ngroup = \"spooks\"\n" +
			"[[service.socket]]\nlisten = \"unix:///run/b\"\nowner = \"phantom\"\n"
		_, err := ParseFor("f.toml", []byte(doc), acct)
		if err == nil {
			t.Fatal("accepted")
		}
		for _, w := range []string{`f.toml:8: service[1].user: service "b": passwd "ghost"`, `f.toml:9: service[1].group`, `f.toml:12: service[1].socket[0].owner`} {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("error %q does not contain %q", err, w)
			}
		}
		var ce *Error
		if !errors.As(err, &ce) {
			t.Errorf("not a config.Error: %T", err)
		}
		if _, err := Parse("f.toml", []byte(doc)); err != nil {
			t.Errorf("without Accounts the names are not checked, got %v", err)
		}
	})
}
