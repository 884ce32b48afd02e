//go:build loopnvme

// Test builds only: with the loopnvme tag the binary can attach volumes as loop devices
// over the RouterOS simulator's exports instead of NVMe/TCP, so the whole driver (and
// csi-sanity, kubelet) runs on machines without nvme-tcp. The production binary is built
// without the tag and contains neither this file nor package loopback.

package main

import (
	"log/slog"
	"path/filepath"

	"srvlab.io/rds-csi/nvme"
	"srvlab.io/rds-csi/nvme/loopback"
)

func init() {
	tagFlags = append(tagFlags, func(c *Config, str func(p *string, name, env, def, usage string)) {
		str(&c.LoopNVMeExportsDir, "loop-nvme-exports-dir", "RDS_CSI_LOOP_NVME_EXPORTS_DIR", "",
			"TEST BUILDS ONLY: attach volumes as loop devices over this exports directory of the RouterOS simulator (<sim dir>/.nvme-exports) instead of NVMe/TCP")
	})
	nvmeAttacher := newAttacher
	newAttacher = func(cfg *Config, guard *nvme.Guard, log *slog.Logger, m *metrics) (attacher, error) {
		if cfg.LoopNVMeExportsDir == "" {
			return nvmeAttacher(cfg, guard, log, m)
		}
		log.Warn("volumes are attached as loop devices over the simulator's exports, not over NVMe/TCP (loopnvme test build)", "exports_dir", cfg.LoopNVMeExportsDir)
		return loopback.New(loopback.Config{
			ExportsDir: cfg.LoopNVMeExportsDir, StateFile: filepath.Join(cfg.StateDir, "loopback.json"),
			Guard: guard, Logger: log, Observe: m.observeNVMe,
		})
	}
}
