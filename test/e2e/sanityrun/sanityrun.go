// Package sanityrun runs the csi-sanity conformance suite (kubernetes-csi/csi-test v5) against
// a running driver and holds it to the project's rule: every spec passes, and a spec may be
// skipped only for a capability the driver does not advertise. It is used by the in-process
// whole-driver test in the root package and by the end-to-end suite in the test VM.
//
// Ginkgo runs one suite per process, so a caller that wants several runs (mount and block)
// starts each in a child process of its own test binary.
package sanityrun

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/kubernetes-csi/csi-test/v5/pkg/sanity"
	"github.com/onsi/ginkgo/v2"
	"github.com/onsi/ginkgo/v2/types"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// NodeSpecs focuses a run on the Node Service specs: the ones whose outcome depends on the
// access type (mount or block). The controller specs need one run only.
const NodeSpecs = `\bNode Service\b`

// Result is what one run of the suite did.
type Result struct {
	Passed, Failed, Skipped int
	// Failures names each failed spec with the first line of its failure.
	Failures []string
	// BadSkips names each spec skipped for a reason the driver's capabilities do not explain.
	BadSkips []string
	// Skips counts the allowed skips by reason, for the report.
	Skips map[string]int
}

// OK reports whether the run proves conformance: specs ran, none failed, none skipped
// without a capability to explain it.
func (r Result) OK() bool { return r.Passed > 0 && r.Failed == 0 && len(r.BadSkips) == 0 }

func (r Result) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d passed, %d failed, %d skipped", r.Passed, r.Failed, r.Skipped)
	if len(r.Skips) > 0 {
		reasons := make([]string, 0, len(r.Skips))
		for k, n := range r.Skips {
			reasons = append(reasons, fmt.Sprintf("%q ×%d", k, n))
		}
		sort.Strings(reasons)
		fmt.Fprintf(&b, " (not advertised: %s)", strings.Join(reasons, ", "))
	}
	for _, f := range r.Failures {
		fmt.Fprintf(&b, "\n  FAILED: %s", f)
	}
	for _, s := range r.BadSkips {
		fmt.Fprintf(&b, "\n  SKIPPED WITHOUT REASON: %s", s)
	}
	return b.String()
}

// Run runs the whole suite with cfg against the driver at cfg.Address (controller and node
// on one endpoint) and returns what happened. t receives Ginkgo's failures. Call it at most
// once per process.
//
// focus, when not empty, is a regular expression on the specs' full text (Ginkgo's focus):
// the specs it leaves out are neither run nor counted.
//
// Each spec gets target and staging directories of its own, made next to cfg.TargetPath and
// cfg.StagingPath: a spec that fails with a volume still mounted then fails alone, instead
// of every later spec failing to create the same directories.
func Run(t ginkgo.GinkgoTestingT, cfg sanity.TestConfig, focus string) (Result, error) {
	caps, err := readCapabilities(cfg.Address)
	if err != nil {
		return Result{}, err
	}
	var focusRe *regexp.Regexp
	if focus != "" {
		if focusRe, err = regexp.Compile(focus); err != nil {
			return Result{}, fmt.Errorf("sanityrun: focus %q: %w", focus, err)
		}
		if err := flag.Set("ginkgo.focus", focus); err != nil {
			return Result{}, fmt.Errorf("sanityrun: set Ginkgo's focus: %w", err)
		}
	}
	cfg.CreateTargetDir = uniqueDir(cfg.TargetPath)
	cfg.CreateStagingDir = uniqueDir(cfg.StagingPath)
	cfg.CheckPath = checkPath
	var (
		mu  sync.Mutex
		res = Result{Skips: map[string]int{}}
	)
	ginkgo.ReportAfterEach(func(r types.SpecReport) {
		if focusRe != nil && !focusRe.MatchString(r.FullText()) {
			return // left out by the focus
		}
		mu.Lock()
		defer mu.Unlock()
		switch {
		case r.State == types.SpecStatePassed:
			res.Passed++
		case r.State == types.SpecStateSkipped:
			res.Skipped++
			reason := strings.TrimSpace(r.Failure.Message)
			if why := caps.explains(reason); why != "" {
				res.Skips[reason]++
			} else {
				res.BadSkips = append(res.BadSkips, fmt.Sprintf("%s: %q", r.FullText(), reason))
			}
		case r.State.Is(types.SpecStateFailureStates):
			res.Failed++
			msg, _, _ := strings.Cut(strings.TrimSpace(r.Failure.Message), "\n")
			res.Failures = append(res.Failures, fmt.Sprintf("%s: %s", r.FullText(), msg))
		}
	})
	sanity.Test(t, cfg)
	return res, nil
}

// capabilities is what the driver advertises, read over CSI before the suite starts.
type capabilities struct {
	plugin        map[csi.PluginCapability_Service_Type]bool
	controller    map[csi.ControllerServiceCapability_RPC_Type]bool
	node          map[csi.NodeServiceCapability_RPC_Type]bool
	topology      bool // NodeGetInfo reports accessible topology
	maxVolumesSet bool // NodeGetInfo reports max_volumes_per_node
}

func readCapabilities(address string) (*capabilities, error) {
	conn, err := grpc.NewClient(address, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithAuthority("localhost"))
	if err != nil {
		return nil, fmt.Errorf("sanityrun: dial %s: %w", address, err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := &capabilities{
		plugin:     map[csi.PluginCapability_Service_Type]bool{},
		controller: map[csi.ControllerServiceCapability_RPC_Type]bool{},
		node:       map[csi.NodeServiceCapability_RPC_Type]bool{},
	}
	pc, err := csi.NewIdentityClient(conn).GetPluginCapabilities(ctx, &csi.GetPluginCapabilitiesRequest{})
	if err != nil {
		return nil, fmt.Errorf("sanityrun: GetPluginCapabilities: %w", err)
	}
	for _, x := range pc.GetCapabilities() {
		if s := x.GetService(); s != nil {
			c.plugin[s.GetType()] = true
		}
	}
	if c.plugin[csi.PluginCapability_Service_CONTROLLER_SERVICE] {
		cc, err := csi.NewControllerClient(conn).ControllerGetCapabilities(ctx, &csi.ControllerGetCapabilitiesRequest{})
		if err != nil {
			return nil, fmt.Errorf("sanityrun: ControllerGetCapabilities: %w", err)
		}
		for _, x := range cc.GetCapabilities() {
			c.controller[x.GetRpc().GetType()] = true
		}
	}
	nc, err := csi.NewNodeClient(conn).NodeGetCapabilities(ctx, &csi.NodeGetCapabilitiesRequest{})
	if err != nil {
		return nil, fmt.Errorf("sanityrun: NodeGetCapabilities: %w", err)
	}
	for _, x := range nc.GetCapabilities() {
		c.node[x.GetRpc().GetType()] = true
	}
	ni, err := csi.NewNodeClient(conn).NodeGetInfo(ctx, &csi.NodeGetInfoRequest{})
	if err != nil {
		return nil, fmt.Errorf("sanityrun: NodeGetInfo: %w", err)
	}
	c.topology = ni.GetAccessibleTopology() != nil
	c.maxVolumesSet = ni.GetMaxVolumesPerNode() > 0
	return c, nil
}

type ctrlCap = csi.ControllerServiceCapability_RPC_Type
type nodeCap = csi.NodeServiceCapability_RPC_Type

// controllerSkips and nodeSkips map csi-sanity's skip messages to the capability whose
// absence they stand for. A skip is allowed only when the driver does not advertise it.
var controllerSkips = map[string]ctrlCap{
	"CreateVolume not supported":                           csi.ControllerServiceCapability_RPC_CREATE_DELETE_VOLUME,
	"DeleteVolume not supported":                           csi.ControllerServiceCapability_RPC_CREATE_DELETE_VOLUME,
	"GetCapacity not supported":                            csi.ControllerServiceCapability_RPC_GET_CAPACITY,
	"ListVolumes not supported":                            csi.ControllerServiceCapability_RPC_LIST_VOLUMES,
	"ControllerPublishVolume not supported":                csi.ControllerServiceCapability_RPC_PUBLISH_UNPUBLISH_VOLUME,
	"ControllerUnpublishVolume not supported":              csi.ControllerServiceCapability_RPC_PUBLISH_UNPUBLISH_VOLUME,
	"Controller Publish, UnpublishVolume not supported":    csi.ControllerServiceCapability_RPC_PUBLISH_UNPUBLISH_VOLUME,
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
	"ControllerExpandVolume not supported":                 csi.ControllerServiceCapability_RPC_EXPAND_VOLUME,
	"ControllerGetVolumeHealth not supported":              csi.ControllerServiceCapability_RPC_GET_VOLUME_HEALTH,
	"ControllerListVolumeHealth not supported":             csi.ControllerServiceCapability_RPC_LIST_VOLUME_HEALTH,
}

var nodeSkips = map[string]nodeCap{
	"NodeStageVolume not supported":                             csi.NodeServiceCapability_RPC_STAGE_UNSTAGE_VOLUME,
	"NodeUnstageVolume not supported":                           csi.NodeServiceCapability_RPC_STAGE_UNSTAGE_VOLUME,
	"NodeGetVolume not supported":                               csi.NodeServiceCapability_RPC_GET_VOLUME_STATS,
	"NodeExpandVolume not supported":                            csi.NodeServiceCapability_RPC_EXPAND_VOLUME,
	"NodeGetVolumeHealth not supported":                         csi.NodeServiceCapability_RPC_GET_VOLUME_HEALTH,
	"NodeGetStorageHealth not supported":                        csi.NodeServiceCapability_RPC_GET_STORAGE_HEALTH,
	"Service does not have single node multi writer capability": csi.NodeServiceCapability_RPC_SINGLE_NODE_MULTI_WRITER,
}

// explains returns why a skip with this message is legitimate for this driver, or "" when
// it is not (an advertised capability, or a reason that is no capability at all, such as
// "Required bytes not supported" or "capacity of the volume is unknown").
func (c *capabilities) explains(reason string) string {
	if cp, ok := controllerSkips[reason]; ok && !c.controller[cp] {
		return "controller does not advertise " + cp.String()
	}
	if cp, ok := nodeSkips[reason]; ok && !c.node[cp] {
		return "node does not advertise " + cp.String()
	}
	switch reason {
	case "SNAPSHOT_ACCESSIBILITY_CONSTRAINTS not supported":
		if !c.plugin[csi.PluginCapability_Service_SNAPSHOT_ACCESSIBILITY_CONSTRAINTS] {
			return "no snapshot accessibility constraints advertised"
		}
	case "node does not report accessible topology":
		if !c.topology {
			return "NodeGetInfo reports no topology"
		}
	case "testnodevolumeattachlimit not enabled":
		return "the attach-limit spec is off in the test configuration (TestNodeVolumeAttachLimit)"
	case "No MaxVolumesPerNode":
		if !c.maxVolumesSet {
			return "NodeGetInfo reports no volume limit"
		}
	case "GroupControllerService not supported", "VolumeGroupSnapshots not supported":
		if !c.plugin[csi.PluginCapability_Service_GROUP_CONTROLLER_SERVICE] {
			return "no group controller service advertised"
		}
	}
	return ""
}

// uniqueDir makes a fresh directory beside path for each spec.
func uniqueDir(path string) func(string) (string, error) {
	return func(string) (string, error) {
		return os.MkdirTemp(filepath.Dir(path), filepath.Base(path)+"-")
	}
}

// checkPath is csi-sanity's own default check, needed once the directories are custom.
func checkPath(path string) (sanity.PathKind, error) {
	fi, err := os.Stat(path)
	switch {
	case os.IsNotExist(err):
		return sanity.PathIsNotFound, nil
	case err != nil:
		return "", err
	case fi.Mode().IsRegular():
		return sanity.PathIsFile, nil
	case fi.IsDir():
		return sanity.PathIsDir, nil
	}
	return sanity.PathIsOther, nil
}
