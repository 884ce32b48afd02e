package main

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
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

// rdsHealth keeps track of whether the RDS answered recently. The controller never exits
// because the RDS is unreachable (that would crash-loop it through an appliance reboot): it
// reports not-ready through Probe and keeps retrying in the background.
type rdsHealth struct {
	ping     func(context.Context) error
	interval time.Duration // between pings while healthy
	maxDelay time.Duration // upper bound of the retry backoff while failing
	log      *slog.Logger
	onChange func(up bool)

	lastOK atomic.Int64 // unix nanoseconds of the last successful contact
	up     atomic.Bool
}

func newRDSHealth(ping func(context.Context) error, log *slog.Logger, onChange func(bool)) *rdsHealth {
	return &rdsHealth{ping: ping, interval: 15 * time.Second, maxDelay: 30 * time.Second, log: log, onChange: onChange}
}

// ready is true when the RDS answered within three healthy intervals.
func (h *rdsHealth) ready() bool {
	last := h.lastOK.Load()
	return last != 0 && time.Since(time.Unix(0, last)) < 3*h.interval
}

// observe takes the outcome of one RouterOS operation (the client's Observe hook): any
// answer from the RDS, also a refusal such as "not found", shows it is up; a transport
// failure or a deadline does not. Pings are left to run, which judges them itself.
func (h *rdsHealth) observe(op string, err error) {
	var ce *routeros.CommandError
	if op != "Ping" && (err == nil || errors.As(err, &ce) && ce.Kind != routeros.KindTransport) {
		h.markOK()
	}
}

// markOK records a successful contact.
func (h *rdsHealth) markOK() {
	h.lastOK.Store(time.Now().UnixNano())
	h.setUp(true)
}

func (h *rdsHealth) setUp(up bool) {
	if h.up.Swap(up) == up {
		return
	}
	if up {
		h.log.Info("RDS reachable")
	}
	if h.onChange != nil {
		h.onChange(up)
	}
}

// run pings until ctx ends: every interval while healthy, with backoff from 1 s while not.
func (h *rdsHealth) run(ctx context.Context) {
	delay := time.Second
	for {
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := h.ping(pctx)
		cancel()
		next := h.interval
		switch {
		case ctx.Err() != nil:
			return
		case err == nil:
			h.markOK()
			delay = time.Second
		default:
			if h.up.Load() || h.lastOK.Load() == 0 && delay == time.Second {
				h.log.Warn("RDS not reachable; retrying in the background (Probe reports not ready)", "err", err)
			}
			h.setUp(false)
			next, delay = delay, min(delay*2, h.maxDelay)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(next):
		}
	}
}
