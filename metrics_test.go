package main

import (
	"errors"
	"os"
	"strings"
	"testing"
	"time"
)

// The README documents these names; dashboards and alerts depend on them.
func TestMetricNamesAreStableAndDocumented(t *testing.T) {
	m := newMetrics()
	m.observeRPC("CreateVolume", "OK", time.Millisecond)
	m.observeRouterOS("CreateDisk", time.Millisecond, "no_space")
	m.observeNVMe("connect", errors.New("refused"))
	m.volumeNVMeState.WithLabelValues("pvc-1").Set(1)
	m.volumePaths.WithLabelValues("pvc-1", "live").Set(2)
	m.healsTotal.WithLabelValues("ok").Inc()
	m.poolSizeBytes.WithLabelValues("storage-pool").Set(1)
	m.poolFreeBytes.WithLabelValues("storage-pool").Set(1)
	families, err := m.registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, f := range families {
		got[f.GetName()] = true
	}
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{
		"rds_csi_rpc_total", "rds_csi_rpc_duration_seconds", "rds_csi_routeros_command_duration_seconds",
		"rds_csi_routeros_command_errors_total", "rds_csi_rds_ssh_connected", "rds_csi_pool_size_bytes",
		"rds_csi_pool_free_bytes", "rds_csi_nvme_operations_total", "rds_csi_volume_nvme_controller_live", "rds_csi_volume_nvme_paths",
		"rds_csi_heals_total", "rds_csi_stale_mounts_total", "rds_csi_breakers_open", "rds_csi_migration_timeouts_total",
		"go_goroutines", "process_resident_memory_bytes",
	} {
		if !got[name] {
			t.Errorf("metric %s is not exported", name)
		}
		if strings.HasPrefix(name, "rds_csi_") && !strings.Contains(string(readme), name) {
			t.Errorf("metric %s is not documented in README.md", name)
		}
	}
}
