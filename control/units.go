package control

import (
	"encoding"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"reflect"
	"regexp"
	"strings"

	"github.com/baton-init/baton/config"
	"github.com/baton-init/baton/services"
)

// The API behind initctl's systemctl-like commands: show (a service's effective settings),
// cat (its block of the config file), kill and reload (actions, server.go).

// Setting is one config key of a service with its effective value (defaults filled in).
type Setting struct {
	Key   string `json:"key"`
	Value any    `json:"value"`
}

// ServiceConfig is GET /v1/services/{name}/config.
type ServiceConfig struct {
	Name     string    `json:"name"`
	Settings []Setting `json:"settings"` // in the config's order of keys
}

// ServiceUnit is GET /v1/services/{name}/unit: the service's block of the config file as it
// is on disk now (which may differ from what runs, until reload-config).
type ServiceUnit struct {
	File string `json:"file"`
	Text string `json:"text"`
}

func (s *Server) serviceConfig(w http.ResponseWriter, r *http.Request) {
	svc := s.service(w, r)
	if svc == nil {
		return
	}
	spec := svc.Spec()
	writeJSON(w, http.StatusOK, ServiceConfig{Name: spec.Name, Settings: settingsOf(reflect.ValueOf(spec))})
}

// settingsOf lists a config struct's fields by their TOML keys.
func settingsOf(v reflect.Value) []Setting {
	var out []Setting
	t := v.Type()
	for i := range t.NumField() {
		key, _, _ := strings.Cut(t.Field(i).Tag.Get("toml"), ",")
		if key == "" || key == "-" {
			continue
		}
		out = append(out, Setting{Key: key, Value: plain(v.Field(i))})
	}
	return out
}

// plain turns a config value into what JSON and key=value lines show: durations and other
// text values as their text, tables as objects keyed by their TOML keys.
func plain(v reflect.Value) any {
	if v.CanInterface() {
		if m, ok := v.Interface().(encoding.TextMarshaler); ok {
			if b, err := m.MarshalText(); err == nil {
				return string(b)
			}
		}
	}
	switch v.Kind() {
	case reflect.Pointer:
		if v.IsNil() {
			return nil
		}
		return plain(v.Elem())
	case reflect.Slice:
		out := make([]any, 0, v.Len())
		for i := range v.Len() {
			out = append(out, plain(v.Index(i)))
		}
		return out
	case reflect.Struct:
		m := map[string]any{}
		for _, st := range settingsOf(v) {
			m[st.Key] = st.Value
		}
		return m
	default:
		return v.Interface()
	}
}

func (s *Server) serviceUnit(w http.ResponseWriter, r *http.Request) {
	svc := s.service(w, r)
	if svc == nil {
		return
	}
	if s.ConfigFile == "" {
		writeError(w, http.StatusConflict, "baton runs without a config file")
		return
	}
	data, err := os.ReadFile(s.ConfigFile)
	if err != nil {
		writeError(w, http.StatusConflict, fmt.Sprintf("read %s: %v", s.ConfigFile, err))
		return
	}
	text, ok := serviceBlock(string(data), svc.Spec().Name)
	if !ok {
		writeError(w, http.StatusConflict, fmt.Sprintf("%s has no [[service]] named %q now (reload-config removes it)", s.ConfigFile, svc.Spec().Name))
		return
	}
	writeJSON(w, http.StatusOK, ServiceUnit{File: s.ConfigFile, Text: text})
}

var (
	tableHeader   = regexp.MustCompile(`^\s*\[`)
	serviceHeader = regexp.MustCompile(`^\s*\[\[\s*service\s*\]\]`)
	subTable      = regexp.MustCompile(`^\s*\[\[?\s*service\s*\.`) // [[service.socket]] and kin
	nameLine      = regexp.MustCompile(`^\s*name\s*=\s*["']([^"']*)["']`)
)

// serviceBlock cuts the [[service]] table named name (with its sub-tables) out of a config
// file: from its header to the next table that is not one of its own.
func serviceBlock(data, name string) (string, bool) {
	lines := strings.SplitAfter(data, "\n")
	for i := 0; i < len(lines); i++ {
		if !serviceHeader.MatchString(lines[i]) {
			continue
		}
		end, found := i+1, false
		for ; end < len(lines); end++ {
			l := lines[end]
			if tableHeader.MatchString(l) && !subTable.MatchString(l) {
				break
			}
			if m := nameLine.FindStringSubmatch(l); m != nil && m[1] == name {
				found = true
			}
		}
		if found {
			return strings.TrimRight(strings.Join(lines[i:end], ""), "\n") + "\n", true
		}
		i = end - 1
	}
	return "", false
}

// Client side.

// ServiceConfig returns a service's effective settings.
func (c *Client) ServiceConfig(name string) (ServiceConfig, error) {
	var sc ServiceConfig
	err := c.call("GET", "/v1/services/"+url.PathEscape(name)+"/config", nil, &sc)
	return sc, err
}

// ServiceUnit returns a service's block of the config file.
func (c *Client) ServiceUnit(name string) (ServiceUnit, error) {
	var u ServiceUnit
	err := c.call("GET", "/v1/services/"+url.PathEscape(name)+"/unit", nil, &u)
	return u, err
}

// Kill sends a signal to a service's processes (main: its main process only).
func (c *Client) Kill(name, signal string, main bool) (ActionResult, error) {
	var r ActionResult
	q := url.Values{"signal": {signal}}
	if main {
		q.Set("main", "1")
	}
	err := c.call("POST", "/v1/services/"+url.PathEscape(name)+"/kill?"+q.Encode(), nil, &r)
	return r, err
}

// killAction is the kill route's part of Server.action.
func (s *Server) killAction(r *http.Request, name string) error {
	q := r.URL.Query()
	sigName := q.Get("signal")
	if sigName == "" {
		sigName = "SIGTERM"
	}
	sig, ok := config.SignalByName(sigName)
	if !ok {
		return &badRequest{fmt.Sprintf("signal=%q: not a signal name (e.g. SIGTERM, SIGHUP, SIGKILL)", sigName)}
	}
	main := q.Get("main")
	if main != "" && main != "0" && main != "1" {
		return &badRequest{fmt.Sprintf("main=%q: want 0 or 1", main)}
	}
	return s.SV.Kill(name, sig, main == "1")
}

type badRequest struct{ msg string }

func (e *badRequest) Error() string { return e.msg }

// actionCode is the HTTP status of a failed service action.
func actionCode(err error) int {
	var br *badRequest
	if errors.As(err, &br) {
		return http.StatusBadRequest
	}
	return http.StatusConflict
}

// systemdState is a state as systemctl is-active prints it.
func systemdState(st services.State) string {
	switch st {
	case services.Running:
		return "active"
	case services.Reloading:
		return "reloading"
	case services.Starting:
		return "activating"
	case services.Stopping:
		return "deactivating"
	case services.Failed:
		return "failed"
	default:
		return "inactive"
	}
}
