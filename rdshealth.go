package main

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
	"time"

	"srvlab.io/rds-csi/routeros"
)

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
