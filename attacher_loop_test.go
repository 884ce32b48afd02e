//go:build loopnvme

package main

import (
	"path/filepath"
	"testing"

	"srvlab.io/rds-csi/nvme/loopback"
)

// TestNodeLoopAttacherEnv: a loopnvme build with RDS_CSI_LOOP_NVME_EXPORTS_DIR set
// attaches through the loop-device stand-in; without it, through NVMe/TCP.
func TestNodeLoopAttacherEnv(t *testing.T) {
	dir := t.TempDir()
	cfg := &Config{StateDir: dir, NVMeHostDir: filepath.Join(dir, "nvme"), SysfsRoot: "/sys", DevRoot: "/dev"}
	t.Setenv(loopExportsEnv, filepath.Join(dir, "rds", ".nvme-exports"))
	att, err := newAttacher(cfg, testGuard(t), testLogger(t), newMetrics())
	must(t, err)
	if _, ok := att.(*loopback.Host); !ok {
		t.Fatalf("attacher %T, want *loopback.Host", att)
	}
	t.Setenv(loopExportsEnv, "")
	att, err = newAttacher(cfg, testGuard(t), testLogger(t), newMetrics())
	must(t, err)
	if _, ok := att.(*loopback.Host); ok {
		t.Fatal("without the environment variable the attacher must be the NVMe host")
	}
}
