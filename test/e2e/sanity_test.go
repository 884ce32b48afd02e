//go:build e2e

package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/kubernetes-csi/csi-test/v5/pkg/sanity"

	"srvlab.io/rds-csi/test/e2e/sanityrun"
)

// Ginkgo runs one suite per process: each csi-sanity run is this test binary started
// again with these variables, dispatched by TestMain to sanityChild.
const (
	sanityChildEnv   = "RDS_E2E_SANITY"         // the access type: mount or block
	sanityAddressEnv = "RDS_E2E_SANITY_ADDRESS" // the driver's endpoint
	sanityDirEnv     = "RDS_E2E_SANITY_DIR"     // parent of the target and staging paths
)

// sanity runs csi-sanity with volumes of the given access type (every spec for filesystem
// volumes, the node specs for block volumes), over real NVMe/TCP,
// against a driver instance in --mode=all (controller and node on one socket) that manages
// csi-sanity's volumes. Its node prefix and the scenarios' are disjoint, so neither node
// instance can touch the other's volumes, and it runs beside node 1 until shutdown.
func (e *env) sanity(t *testing.T, accessType string) {
	if e.sanityDriver == nil {
		e.sanityDriver = e.newDriverFor("e2e-sanity", "all", sanityPrefix)
		e.sanityDriver.start(t)
	}
	dir := filepath.Join(e.work, "sanity-"+accessType)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-ginkgo.no-color")
	cmd.Env = append(os.Environ(),
		sanityChildEnv+"="+accessType,
		sanityAddressEnv+"=unix://"+e.sanityDriver.socket,
		sanityDirEnv+"="+dir,
	)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("csi-sanity (%s volumes) failed: %v", accessType, err)
	}
}

// sanityChild runs the suite in this process and returns the exit status.
func sanityChild(accessType string) int {
	cfg := sanity.NewTestConfig()
	cfg.Address = os.Getenv(sanityAddressEnv)
	cfg.TargetPath = filepath.Join(os.Getenv(sanityDirEnv), "target")
	cfg.StagingPath = filepath.Join(os.Getenv(sanityDirEnv), "staging")
	cfg.TestVolumeAccessType = accessType
	// Small volumes keep mkfs quick under emulation; the expansion size is a whole MiB
	// multiple, so the exact size the driver reports must equal it.
	cfg.TestVolumeSize = 64 * mib
	cfg.TestVolumeExpandSize = 128 * mib
	cfg.TestNodeVolumeAttachLimit = true
	// Every spec's volume has two paths (a two-path StorageClass): the node connects both.
	cfg.TestVolumeParameters = map[string]string{"nvmeAddresses": nvmeAddress + "," + nvmePath2}
	focus := "" // every spec with filesystem volumes
	if accessType == "block" {
		focus = sanityrun.NodeSpecs
	}
	failed := &ginkgoFailure{}
	res, err := sanityrun.Run(failed, cfg, focus)
	if err != nil {
		fmt.Printf("csi-sanity (%s volumes): %v\n", accessType, err)
		return 1
	}
	fmt.Printf("csi-sanity (%s volumes): %v\n", accessType, res)
	if failed.failed || !res.OK() {
		return 1
	}
	return 0
}

// ginkgoFailure is the GinkgoTestingT of a suite run outside `go test`'s own tests.
type ginkgoFailure struct{ failed bool }

func (g *ginkgoFailure) Fail() { g.failed = true }
