package main

import (
	"fmt"
	"log/slog"
	"strings"

	"github.com/baton-init/baton/config"
	"github.com/baton-init/baton/services"
)

// configReloader reads the config at path again and applies its services (initctl
// reload-config). A config with errors changes nothing. The machine's own settings (hostname,
// network, mounts, [control], [kexec], [boot]) are read at boot only: they apply at the next.
func configReloader(log *slog.Logger, sv *services.Supervisor, path string) func() (services.ReloadReport, error) {
	return func() (services.ReloadReport, error) {
		cfg, err := config.Load(path)
		if err != nil {
			log.Error("reload-config: config not applied", "path", path, "err", err)
			return services.ReloadReport{}, fmt.Errorf("config %s not applied; nothing changed:\n%w", path, err)
		}
		rep := sv.Reload(cfg)
		log.Info("config reloaded", "path", path, "started", strings.Join(rep.Started, ","),
			"stopped", strings.Join(rep.Stopped, ","), "upgraded", strings.Join(rep.Upgraded, ","),
			"restarted", strings.Join(rep.Restarted, ","), "rebuilt", strings.Join(rep.Replaced, ","),
			"errors", len(rep.Errors))
		return rep, nil
	}
}
