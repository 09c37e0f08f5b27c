package config

import (
	"os"
	"testing"
)

// FuzzParse: no input makes the parser panic or hang, and no error is longer than a console
// can take (the limits of 20 errors and 100 quoted characters hold for any input).
// make fuzz runs it; go test runs the seeds (below and in testdata/fuzz/FuzzParse).
func FuzzParse(f *testing.F) {
	f.Add([]byte(good))
	if b, err := os.ReadFile("../examples/baton.toml"); err == nil {
		f.Add(b)
	}
	f.Add([]byte("[[service]]\nname = \"a\"\nexec = [\"/a\"]\nsocket = [{listen = \"tcp://:80\", x = 1}]\n"))
	f.Add([]byte("control = {remote = \"1.2.3.4:5\", max_handshakes = -1}\n[[service.socket]]\n"))
	f.Add([]byte("a.b.c = 1\n[x.y]\n[[z]]\nq = {r = {s = [1, {t = 2}]}}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		_, err := Parse("f.toml", data)
		if err != nil && len(err.Error()) > 64<<10 {
			t.Errorf("error of %d bytes", len(err.Error()))
		}
	})
}
