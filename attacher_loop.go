//go:build loopnvme

// Test builds only: with the loopnvme tag and RDS_CSI_LOOP_NVME_EXPORTS_DIR set (the
// RouterOS simulator's <sim dir>/.nvme-exports), volumes attach as loop devices over the
// simulator's exports instead of NVMe/TCP, so the whole driver (and csi-sanity, kubelet)
// runs without nvme-tcp. The production binary has neither this file nor package loopback.

package main

import (
	"log/slog"
	"os"
	"path/filepath"

	"srvlab.io/rds-csi/nvme"
	"srvlab.io/rds-csi/nvme/loopback"
)

// loopExportsEnv names the simulator's exports directory in loopnvme builds.
const loopExportsEnv = "RDS_CSI_LOOP_NVME_EXPORTS_DIR"

func init() {
	nvmeAttacher := newAttacher
	newAttacher = func(cfg *Config, guard *nvme.Guard, log *slog.Logger, m *metrics) (attacher, error) {
		dir := os.Getenv(loopExportsEnv)
		if dir == "" {
			return nvmeAttacher(cfg, guard, log, m)
		}
		log.Warn("volumes are attached as loop devices over the simulator's exports, not over NVMe/TCP (loopnvme test build)", "exports_dir", dir)
		return loopback.New(loopback.Config{
			ExportsDir: dir, StateFile: filepath.Join(cfg.StateDir, "loopback.json"),
			Guard: guard, Logger: log, Observe: m.observeNVMe,
		})
	}
}
