package main

import (
	"context"
	"log/slog"

	"srvlab.io/rds-csi/nvme"
)

// attacher is what the node service needs from the NVMe host. Production uses *nvme.Host;
// tests and binaries built with the loopnvme tag use the loop-device stand-in
// (nvme/loopback), which has the same method set.
type attacher interface {
	Probe() (nvme.Features, error)
	// Multipath reports whether the kernel's native NVMe multipath is on: only then may a
	// volume connect more than one path (see node_paths.go).
	Multipath() (bool, error)
	Connect(ctx context.Context, t nvme.Target, o nvme.Options) (*nvme.Disk, error)
	Resolve(nqn string, nsid int) (*nvme.Disk, error)
	Health(nqn string) (nvme.Health, error)
	Disconnect(ctx context.Context, nqn string) error
	Rescan(ctx context.Context, nqn string, nsid int) (*nvme.Disk, error)
	Subsystems() ([]nvme.Subsystem, error)
	Sweep(ctx context.Context, claimed, owned map[string]bool, inUse func(nvme.Disk) bool) (nvme.SweepReport, error)
}

var _ attacher = (*nvme.Host)(nil)

// newAttacher builds the node's attacher. attacher_loop.go (build tag loopnvme) replaces
// it when --loop-nvme-exports-dir is set; the production binary only has the real one.
var newAttacher = newNVMeAttacher

// newNVMeAttacher is the real NVMe/TCP host. It succeeds where /dev/nvme-fabrics is
// missing (nvme.NewHost logs it); staging then fails with nvme's error saying so.
func newNVMeAttacher(cfg *Config, guard *nvme.Guard, log *slog.Logger, m *metrics) (attacher, error) {
	return nvme.NewHost(nvme.Config{
		SysfsRoot: cfg.SysfsRoot, DevRoot: cfg.DevRoot, HostDir: cfg.NVMeHostDir,
		Guard: guard, Logger: log, Observe: m.observeNVMe,
	})
}
