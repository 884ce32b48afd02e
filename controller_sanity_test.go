package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/kubernetes-csi/csi-test/v5/pkg/sanity"
	"github.com/onsi/ginkgo/v2"
	"github.com/onsi/ginkgo/v2/types"
	"github.com/onsi/gomega"
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
	sc := sanity.GinkgoTest(&cfg)
	defer sc.Finalize()

	res := &sanityResult{skips: map[string]int{}}
	ginkgo.ReportAfterEach(res.record)
	gomega.RegisterFailHandler(ginkgo.Fail)
	suite, reporter := ginkgo.GinkgoConfiguration()
	suite.FocusStrings = []string{`\[Controller Server\]`}
	reporter.Succinct, reporter.NoColor = true, true
	ginkgo.RunSpecs(t, "rds-csi controller sanity", suite, reporter)

	fmt.Printf("\n%s%s\n", sanitySummaryPrefix, res)
	if res.passed == 0 {
		t.Error("no controller spec passed")
	}
	for _, bad := range res.badSkips {
		t.Errorf("skipped although the controller advertises what it needs: %s", bad)
	}
}

// sanityResult tallies the controller specs.
type sanityResult struct {
	mu                      sync.Mutex
	passed, failed, skipped int
	skips                   map[string]int
	badSkips                []string
}

func (r *sanityResult) record(rep types.SpecReport) {
	if !strings.Contains(rep.FullText(), "[Controller Server]") {
		return // filtered out by the focus: another helper's specs
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case rep.State == types.SpecStatePassed:
		r.passed++
	case rep.State == types.SpecStateSkipped:
		r.skipped++
		reason := strings.TrimSpace(rep.Failure.Message)
		if allowedSanitySkip(reason) {
			r.skips[reason]++
		} else {
			r.badSkips = append(r.badSkips, fmt.Sprintf("%s: %q", rep.FullText(), reason))
		}
	case rep.State.Is(types.SpecStateFailureStates):
		r.failed++
	}
}

func (r *sanityResult) String() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	reasons := make([]string, 0, len(r.skips))
	for k, n := range r.skips {
		reasons = append(reasons, fmt.Sprintf("%q ×%d", k, n))
	}
	sort.Strings(reasons)
	return fmt.Sprintf("%d passed, %d failed, %d skipped (%s)", r.passed, r.failed, r.skipped, strings.Join(reasons, ", "))
}

// sanitySkipCapability maps csi-sanity's skip messages to the capability whose absence
// they stand for; a skip is allowed only when the controller does not advertise it.
var sanitySkipCapability = map[string]csi.ControllerServiceCapability_RPC_Type{
	"ControllerPublishVolume.readonly field not supported": csi.ControllerServiceCapability_RPC_PUBLISH_READONLY,
	"Snapshot not supported":                               csi.ControllerServiceCapability_RPC_CREATE_DELETE_SNAPSHOT,
	"CreateSnapshot not supported":                         csi.ControllerServiceCapability_RPC_CREATE_DELETE_SNAPSHOT,
	"DeleteSnapshot not supported":                         csi.ControllerServiceCapability_RPC_CREATE_DELETE_SNAPSHOT,
	"ListSnapshots not supported":                          csi.ControllerServiceCapability_RPC_LIST_SNAPSHOTS,
	"GetSnapshot not supported":                            csi.ControllerServiceCapability_RPC_GET_SNAPSHOT,
	"Volume Cloning not supported":                         csi.ControllerServiceCapability_RPC_CLONE_VOLUME,
	"Modify volume not supported":                          csi.ControllerServiceCapability_RPC_MODIFY_VOLUME,
	"Modify Volume not supported":                          csi.ControllerServiceCapability_RPC_MODIFY_VOLUME,
	"ControllerModifyVolume not supported":                 csi.ControllerServiceCapability_RPC_MODIFY_VOLUME,
}

func allowedSanitySkip(reason string) bool {
	switch reason {
	case "testnodevolumeattachlimit not enabled":
		return true // a node limit the node service's own sanity run covers
	case "SNAPSHOT_ACCESSIBILITY_CONSTRAINTS not supported":
		// a plugin capability for topology-constrained snapshots; the identity service
		// advertises no topology at all (one RDS serves every node)
		return !pluginAdvertises(csi.PluginCapability_Service_SNAPSHOT_ACCESSIBILITY_CONSTRAINTS)
	}
	capability, ok := sanitySkipCapability[reason]
	if !ok {
		return false
	}
	for _, c := range controllerCapabilities {
		if c == capability {
			return false
		}
	}
	return true
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

// pluginAdvertises reports whether the identity service lists a plugin service capability.
func pluginAdvertises(want csi.PluginCapability_Service_Type) bool {
	resp, err := (&identityService{controller: &controllerService{}}).GetPluginCapabilities(context.Background(), &csi.GetPluginCapabilitiesRequest{})
	if err != nil {
		return true // unknown: the skip is not excused
	}
	for _, c := range resp.GetCapabilities() {
		if c.GetService().GetType() == want {
			return true
		}
	}
	return false
}
