package main

import (
	"context"
	"log/slog"

	"github.com/container-storage-interface/spec/lib/go/csi"

	"srvlab.io/rds-csi/routeros"
)

// controllerService is the CSI Controller service. Volume RPCs arrive with issue 4; until
// then it only keeps the RDS connection's health for Probe.
type controllerService struct {
	csi.UnimplementedControllerServer
	cfg    *Config
	log    *slog.Logger
	rds    *routeros.Client
	health *rdsHealth
}

func newControllerService(cfg *Config, log *slog.Logger, m *metrics) (*controllerService, error) {
	rds, err := newRDSClient(cfg, log, m)
	if err != nil {
		return nil, err
	}
	health := newRDSHealth(rds.Ping, log, func(up bool) {
		if up {
			m.rdsConnected.Set(1)
		} else {
			m.rdsConnected.Set(0)
		}
	})
	return &controllerService{cfg: cfg, log: log, rds: rds, health: health}, nil
}

func (c *controllerService) run(ctx context.Context)       { c.health.run(ctx) }
func (c *controllerService) ready() bool                   { return c.health.ready() }
func (c *controllerService) supportsOnlineExpansion() bool { return false }
func (c *controllerService) close()                        { _ = c.rds.Close() }
