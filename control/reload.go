package control

import (
	"fmt"
	"net/http"
	"strings"

	"github.com/baton-init/baton/services"
)

// reloadConfig is POST /v1/reload-config: baton reads its config file again and applies it
// (services.Supervisor.Reload); a config with errors changes nothing and is answered 400.
func (s *Server) reloadConfig(w http.ResponseWriter, r *http.Request) {
	if s.ReloadConfig == nil {
		writeError(w, http.StatusConflict, "reload-config: not available here")
		return
	}
	rep, err := s.ReloadConfig()
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, rep)
}

// ReloadConfig asks baton to read its config again and apply it.
func (c *Client) ReloadConfig() (services.ReloadReport, error) {
	var r services.ReloadReport
	err := c.call("POST", "/v1/reload-config", nil, &r)
	return r, err
}

func (ic *initctl) reloadConfig(args []string) error {
	if len(args) > 0 {
		return &usageError{"reload-config takes no arguments"}
	}
	r, err := ic.c.ReloadConfig()
	if err != nil {
		return err
	}
	for _, row := range []struct {
		what  string
		names []string
	}{
		{"stopped (removed)", r.Stopped}, {"started (added)", r.Started}, {"held (added; conflicts with one that runs)", r.Held},
		{"upgraded (exec or env)", r.Upgraded},
		{"restarted (settings)", r.Restarted}, {"rebuilt (sockets)", r.Replaced},
		{"configured (applies at next start)", r.Configured}, {"unchanged", r.Unchanged},
	} {
		if len(row.names) > 0 {
			fmt.Fprintf(ic.out, "%s: %s\n", row.what, strings.Join(row.names, ", "))
		}
	}
	if len(r.Errors) > 0 {
		return fmt.Errorf("reload-config: %s", strings.Join(r.Errors, "; "))
	}
	return nil
}
