package main

import (
	"errors"
	"log/slog"
	"time"

	"srvlab.io/rds-csi/routeros"
)

// newRDSClient builds the RouterOS client from the validated configuration; it does not
// dial (the first command or health ping does, and a failure there is retried).
func newRDSClient(cfg *Config, log *slog.Logger, m *metrics) (*routeros.Client, error) {
	if cfg.RDSInsecureSkipHostKey {
		log.Warn("RDS host key verification is OFF (--rds-insecure-skip-host-key): a machine in the middle could impersonate the RDS; pin the key with --rds-known-hosts")
	}
	return routeros.New(rdsClientConfig(cfg, log, m))
}

// rdsClientConfig maps the configuration onto the RouterOS client's. File paths are held
// to the volume directories as a second line of defence: the client refuses any other
// before it is sent.
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
