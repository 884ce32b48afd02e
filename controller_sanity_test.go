package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/kubernetes-csi/csi-test/v5/pkg/sanity"

	"srvlab.io/rds-csi/test/e2e/sanityrun"
)

// sanityChildEnv marks the child process that runs the suite: Ginkgo allows one suite run
// per process, and the whole-driver sanity run of the same test binary needs its own.
const sanityChildEnv = "RDS_CSI_CONTROLLER_SANITY_CHILD"

// sanityNodeID is the node the stand-in node service reports; the fake API server lists a
// CSINode for it, so publishing to it works and to any other node ID is NotFound.
const sanityNodeID = "sanity-node"

// TestControllerSanity runs csi-sanity's Controller Service specs against the controller
// served over a unix socket, with the RouterOS simulator behind it and a fake Kubernetes
// API for fencing. Every spec must pass; a spec may be skipped only for a capability the
// controller does not advertise.
func TestControllerSanity(t *testing.T) {
	if os.Getenv(sanityChildEnv) != "" {
		runControllerSanity(t)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestControllerSanity$", "-test.count=1")
	cmd.Env = append(os.Environ(), sanityChildEnv+"=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("csi-sanity controller specs failed: %v\n%s", err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(line, sanitySummaryPrefix) {
			t.Log(line)
			return
		}
	}
	t.Fatalf("the sanity run printed no summary:\n%s", out)
}

const sanitySummaryPrefix = "controller sanity: "

func runControllerSanity(t *testing.T) {
	kube := startFakeKube(t)
	kube.addNode(sanityNodeID, sanityNodeID)
	e := newCtrlEnv(t, withAttachments(kube.api(t)))
	ctx, cancel := context.WithCancel(context.Background())
	running := make(chan struct{})
	go func() { e.c.run(ctx); close(running) }()
	defer func() { cancel(); <-running }()
	deadline := time.Now().Add(10 * time.Second)
	for !e.c.fencing.isRebuilt() {
		if time.Now().After(deadline) {
			t.Fatal("attachment records never rebuilt from the fake API server")
		}
		time.Sleep(10 * time.Millisecond)
	}

	addr := e.serve(sanityNode{})

	dir := t.TempDir()
	cfg := sanity.NewTestConfig()
	cfg.Address = addr
	cfg.TargetPath = filepath.Join(dir, "target")
	cfg.StagingPath = filepath.Join(dir, "staging")
	cfg.TestVolumeSize = 1 << 30
	res, err := sanityrun.Run(t, cfg, `\[Controller Server\]`)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Printf("\n%s%s\n", sanitySummaryPrefix, res)
	if !res.OK() {
		t.Errorf("csi-sanity controller specs: %s", res)
	}
}

// sanityNode stands in for the node service in the controller's sanity run: the
// controller specs ask it for the node ID and clean up through NodeUnpublishVolume.
type sanityNode struct{ csi.UnimplementedNodeServer }

func (sanityNode) NodeGetInfo(context.Context, *csi.NodeGetInfoRequest) (*csi.NodeGetInfoResponse, error) {
	return &csi.NodeGetInfoResponse{NodeId: sanityNodeID}, nil
}

func (sanityNode) NodeGetCapabilities(context.Context, *csi.NodeGetCapabilitiesRequest) (*csi.NodeGetCapabilitiesResponse, error) {
	return &csi.NodeGetCapabilitiesResponse{}, nil
}

func (sanityNode) NodeUnpublishVolume(context.Context, *csi.NodeUnpublishVolumeRequest) (*csi.NodeUnpublishVolumeResponse, error) {
	return &csi.NodeUnpublishVolumeResponse{}, nil
}
