package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"

	"srvlab.io/rds-csi/kube"
	"srvlab.io/rds-csi/routeros"
)

// controllerService is the CSI Controller service: volumes are file-backed disks on the
// RDS, exported over NVMe/TCP and managed over SSH; attachments are fenced so a volume is
// never on more nodes than its access mode allows.
type controllerService struct {
	csi.UnimplementedControllerServer
	cfg     *Config
	log     *slog.Logger
	metrics *metrics
	client  *routeros.Client // every operation bounded by --rds-command-timeout (rdsClientConfig)
	health  *rdsHealth
	fencing *fencing
	// nodes checks node IDs against the cluster's CSINodes; nil out of a cluster, where
	// every node ID is taken as given (an optional feature off must not break publishing).
	nodes   nodeRegistry
	locks   *volumeLocks
	copies  *copyTracker // the file copies of snapshots, restores and clones
	bases   []string     // --rds-volume-path, then --rds-allowed-paths
	rdsAddr string       // host:port, for messages

	// Background intervals; variables so tests can shorten them.
	migrationCheckEvery, poolRefreshEvery time.Duration
}

// newControllerService builds the controller from the configuration. It neither dials the
// RDS nor calls the Kubernetes API: run does, retrying, so an unreachable RDS at start-up
// means "not ready", never a crash loop.
func newControllerService(cfg *Config, log *slog.Logger, m *metrics) (*controllerService, error) {
	if _, err := volumeBases(cfg); err != nil {
		return nil, err
	}
	var source attachmentLister
	api, err := kube.New(cfg.Kubeconfig, os.Getenv)
	switch {
	case errors.Is(err, kube.ErrNotConfigured):
	case err != nil:
		return nil, fmt.Errorf("kubernetes API (for VolumeAttachments): %w", err)
	default:
		source = kubeCluster{api}
	}
	if cfg.RDSInsecureSkipHostKey {
		log.Warn("RDS host key verification is OFF (--rds-insecure-skip-host-key): a machine in the middle could impersonate the RDS; pin the key with --rds-known-hosts")
	}
	return newController(cfg, log, m, rdsClientConfig(cfg, log, m), source)
}

// newController wires the controller around a RouterOS client built from rc and the
// cluster's attachments (nil: none, fencing is in-memory only). The client does not dial
// yet. Tests build controllers with it, over the simulator.
func newController(cfg *Config, log *slog.Logger, m *metrics, rc routeros.Config, source attachmentLister) (*controllerService, error) {
	bases, err := volumeBases(cfg)
	if err != nil {
		return nil, err
	}
	c := &controllerService{
		cfg: cfg, log: log, metrics: m,
		locks: newVolumeLocks(), bases: bases,
		rdsAddr:             net.JoinHostPort(cfg.RDSAddress, strconv.Itoa(cfg.RDSSSHPort)),
		migrationCheckEvery: 10 * time.Second, poolRefreshEvery: time.Minute,
	}
	c.health = newRDSHealth(func(ctx context.Context) error { return c.client.Ping(ctx) }, log, func(up bool) {
		if up {
			m.rdsConnected.Set(1)
		} else {
			m.rdsConnected.Set(0)
		}
	})
	// every operation's outcome also tells the health loop whether the RDS answers
	observe := rc.Observe
	rc.Observe = func(op string, d time.Duration, err error) {
		c.health.observe(op, err)
		if observe != nil {
			observe(op, d, err)
		}
	}
	if c.client, err = routeros.New(rc); err != nil {
		return nil, err
	}
	// half the sessions at most for copy commands, which may hold one for the whole copy
	c.copies = newCopyTracker(c.client.CopyFile, log, cfg.RDSMaxSessions/2)
	c.fencing = newFencing(source, cfg.DriverName, log)
	c.fencing.onMigrationTimeout = func(string, []string, time.Duration) { m.migrationTimeouts.Inc() }
	if nr, ok := source.(nodeRegistry); ok {
		c.nodes = nr
	}
	return c, nil
}

// run does the background work until ctx ends: RDS health, the rebuild of attachment
// records from the cluster, migration timeouts, and the pool figures for metrics.
func (c *controllerService) run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Go(func() { c.health.run(ctx) })
	wg.Go(func() { c.fencing.runRebuild(ctx) })
	wg.Go(func() { every(ctx, c.migrationCheckEvery, c.fencing.checkMigrations) })
	wg.Go(func() { every(ctx, c.poolRefreshEvery, func() { c.refreshPools(ctx) }) })
	wg.Wait()
}

// every calls f now and then every d until ctx ends.
func every(ctx context.Context, d time.Duration, f func()) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		f()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (c *controllerService) ready() bool                   { return c.health.ready() }
func (c *controllerService) supportsOnlineExpansion() bool { return true }
func (c *controllerService) close()                        { _ = c.client.Close() }

// controllerCapabilities are what the controller does. LIST_VOLUMES with published nodes
// lets the external-attacher reconcile attachments; GET/LIST_VOLUME_HEALTH replace the
// VOLUME_CONDITION of CSI before 1.13. Snapshots, restores and clones copy the volume's
// file on the RDS (controller_snapshot*.go).
var controllerCapabilities = []csi.ControllerServiceCapability_RPC_Type{
	csi.ControllerServiceCapability_RPC_CREATE_DELETE_VOLUME,
	csi.ControllerServiceCapability_RPC_PUBLISH_UNPUBLISH_VOLUME,
	csi.ControllerServiceCapability_RPC_LIST_VOLUMES,
	csi.ControllerServiceCapability_RPC_LIST_VOLUMES_PUBLISHED_NODES,
	csi.ControllerServiceCapability_RPC_GET_VOLUME,
	csi.ControllerServiceCapability_RPC_GET_VOLUME_HEALTH,
	csi.ControllerServiceCapability_RPC_LIST_VOLUME_HEALTH,
	csi.ControllerServiceCapability_RPC_GET_CAPACITY,
	csi.ControllerServiceCapability_RPC_EXPAND_VOLUME,
	csi.ControllerServiceCapability_RPC_SINGLE_NODE_MULTI_WRITER,
	csi.ControllerServiceCapability_RPC_CREATE_DELETE_SNAPSHOT,
	csi.ControllerServiceCapability_RPC_LIST_SNAPSHOTS,
	csi.ControllerServiceCapability_RPC_GET_SNAPSHOT,
	csi.ControllerServiceCapability_RPC_CLONE_VOLUME,
}

func (c *controllerService) ControllerGetCapabilities(context.Context, *csi.ControllerGetCapabilitiesRequest) (*csi.ControllerGetCapabilitiesResponse, error) {
	caps := make([]*csi.ControllerServiceCapability, 0, len(controllerCapabilities))
	for _, t := range controllerCapabilities {
		caps = append(caps, &csi.ControllerServiceCapability{Type: &csi.ControllerServiceCapability_Rpc{
			Rpc: &csi.ControllerServiceCapability_RPC{Type: t}}})
	}
	return &csi.ControllerGetCapabilitiesResponse{Capabilities: caps}, nil
}
