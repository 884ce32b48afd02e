//go:build loopnvme

package main

import (
	"io"
	"path/filepath"
	"testing"

	"srvlab.io/rds-csi/nvme/loopback"
)

// TestNodeLoopAttacherFlag: a loopnvme build takes --loop-nvme-exports-dir and then
// attaches through the loop-device stand-in; without the flag it uses NVMe/TCP.
func TestNodeLoopAttacherFlag(t *testing.T) {
	dir := t.TempDir()
	exports := filepath.Join(dir, "rds", ".nvme-exports")
	cfg, err := parseConfig([]string{"--mode=node", "--managed-nqn-prefix=" + testPrefix, "--state-dir=" + dir, "--loop-nvme-exports-dir=" + exports},
		func(string) string { return "" }, io.Discard)
	must(t, err)
	if cfg.LoopNVMeExportsDir != exports {
		t.Fatalf("flag not parsed: %q", cfg.LoopNVMeExportsDir)
	}
	att, err := newAttacher(cfg, testGuard(t), testLogger(t), newMetrics())
	must(t, err)
	if _, ok := att.(*loopback.Host); !ok {
		t.Fatalf("attacher %T, want *loopback.Host", att)
	}
	cfg.LoopNVMeExportsDir, cfg.NVMeHostDir, cfg.SysfsRoot, cfg.DevRoot = "", filepath.Join(dir, "nvme"), "/sys", "/dev"
	att, err = newAttacher(cfg, testGuard(t), testLogger(t), newMetrics())
	must(t, err)
	if _, ok := att.(*loopback.Host); ok {
		t.Fatal("without the flag the attacher must be the NVMe host")
	}
}
