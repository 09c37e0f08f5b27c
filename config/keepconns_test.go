package config

import (
	"strings"
	"testing"
)

func TestKeepConnections(t *testing.T) {
	for _, tc := range []struct{ name, body, want string }{
		{"simple", "keep_connections = true\nexec = [\"/bin/a\"]", ""},
		{"forking", "type = \"forking\"\npid_file = \"/run/a.pid\"\nkeep_connections = true\nexec = [\"/bin/a\"]",
			`x.toml:5: service[0].keep_connections: service "a": a forking service cannot hand its connections over`},
		{"not a bool", "keep_connections = \"yes\"\nexec = [\"/bin/a\"]", `keep_connections`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse("x.toml", []byte("[[service]]\nname = \"a\"\n"+tc.body+"\n"))
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("want valid: %v", err)
			case tc.want == "" && !c.Service[0].KeepConnections:
				t.Fatalf("keep_connections not read")
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("got %v; want an error with %q", err, tc.want)
			}
		})
	}
}
