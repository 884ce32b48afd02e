package main

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"

	"srvlab.io/rds-csi/routeros/sim"
)

// newControllerService is what main calls: configuration in, a controller that reaches the
// RDS and picks its attachment source (kubeconfig, in-cluster, or none) out.
func TestControllerServiceFromConfig(t *testing.T) {
	ts := sim.StartTest(t, sim.Options{})
	kube := startFakeKube(t)
	kube.addNode("node-1", "node-1")
	kubeconfig := kube.kubeconfigFile(t)
	badKubeconfig := filepath.Join(t.TempDir(), "bad")
	if err := os.WriteFile(badKubeconfig, []byte(`{"clusters": []}`), 0o600); err != nil {
		t.Fatal(err)
	}
	yamlKubeconfig := filepath.Join(t.TempDir(), "yaml")
	if err := os.WriteFile(yamlKubeconfig, []byte("apiVersion: v1\nkind: Config\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	host, port, _ := strings.Cut(ts.Addr, ":")
	base := []string{"--mode=controller", "--rds-address=" + host, "--rds-ssh-port=" + port, "--rds-user=" + ts.User,
		"--rds-key-file=" + ts.KeyFile, "--rds-known-hosts=" + ts.KnownHostsFile}
	tests := []struct {
		name      string
		args      []string
		wantErr   string
		withNodes bool // a Kubernetes API is configured: node IDs are checked
	}{
		{"out of a cluster", nil, "", false},
		{"kubeconfig", []string{"--kubeconfig=" + kubeconfig}, "", true},
		{"broken kubeconfig", []string{"--kubeconfig=" + badKubeconfig}, "no current-context", false},
		{"YAML kubeconfig", []string{"--kubeconfig=" + yamlKubeconfig}, "kubectl config view --raw --minify --flatten -o json", false},
		{"bad volume path", []string{"--rds-volume-path=storage-pool/x"}, "--rds-volume-path", false},
		{"bad allowed path", []string{"--rds-allowed-paths=/ok/a,/bad dir"}, "--rds-allowed-paths", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("KUBERNETES_SERVICE_HOST", "") // never pick up a real cluster
			cfg, err := parseConfig(append(append([]string{}, base...), tc.args...), envOf(nil), io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			if err := cfg.validate(); err != nil {
				t.Fatal(err)
			}
			c, err := newControllerService(cfg, discardLog, newMetrics())
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("got %v, want an error naming %s", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer c.close()
			if (c.nodes != nil) != tc.withNodes {
				t.Errorf("node checks configured: %v, want %v", c.nodes != nil, tc.withNodes)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { c.run(ctx); close(done) }()
			defer func() { cancel(); <-done }()
			deadline := time.Now().Add(10 * time.Second)
			for !c.ready() || !c.fencing.isRebuilt() {
				if time.Now().After(deadline) {
					t.Fatalf("not ready (RDS %v, fencing rebuilt %v)", c.ready(), c.fencing.isRebuilt())
				}
				time.Sleep(10 * time.Millisecond)
			}
			vol, err := c.CreateVolume(testCtx(t), createReq("pvc-main", 1<<30))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := c.ControllerPublishVolume(testCtx(t), &csi.ControllerPublishVolumeRequest{VolumeId: vol.Volume.VolumeId, NodeId: "node-1", VolumeCapability: rwo}); err != nil {
				t.Fatal(err)
			}
			if !c.supportsOnlineExpansion() {
				t.Error("online expansion not advertised")
			}
			c.fencing.unpublish(vol.Volume.VolumeId, "node-1")
			if _, err := c.DeleteVolume(testCtx(t), &csi.DeleteVolumeRequest{VolumeId: vol.Volume.VolumeId}); err != nil {
				t.Fatal(err)
			}
		})
	}
}
