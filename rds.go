package main

import (
	"errors"
	"log/slog"
	"time"

	"srvlab.io/rds-csi/routeros"
)

// rdsClientConfig maps the configuration onto the RouterOS client's. File paths are held
// to the volume directories as a second line of defence: the client refuses any other
// before it is sent. Every operation but a copy (which the copy tracker bounds) ends by
// --rds-command-timeout unless its caller's deadline is earlier, so no RPC waits on the
// RDS without bound; each is counted in the metrics.
func rdsClientConfig(cfg *Config, log *slog.Logger, m *metrics) routeros.Config {
	return routeros.Config{
		Address:             cfg.RDSAddress,
		Port:                cfg.RDSSSHPort,
		User:                cfg.RDSUser,
		KeyFile:             cfg.RDSKeyFile,
		KnownHostsFile:      cfg.RDSKnownHosts,
		InsecureSkipHostKey: cfg.RDSInsecureSkipHostKey,
		MaxSessions:         cfg.RDSMaxSessions,
		AllowedBases:        append([]string{cfg.RDSVolumePath}, cfg.RDSAllowedPaths...),
		CommandTimeout:      cfg.RDSCommandTimeout,
		Logger:              log.With("component", "routeros"),
		Observe: func(op string, d time.Duration, err error) {
			m.observeRouterOS(op, d, routerosErrorKind(err))
		},
	}
}

// routerosErrorKind labels an error for metrics.
func routerosErrorKind(err error) string {
	switch {
	case err == nil:
		return ""
	case errors.Is(err, routeros.ErrTransport):
		return "transport"
	case errors.Is(err, routeros.ErrNotFound):
		return "not_found"
	case errors.Is(err, routeros.ErrAlreadyExists):
		return "already_exists"
	case errors.Is(err, routeros.ErrNoSpace):
		return "no_space"
	case errors.Is(err, routeros.ErrInvalidArgument):
		return "invalid_argument"
	}
	return "other"
}
