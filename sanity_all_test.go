package main

import (
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/kubernetes-csi/csi-test/v5/pkg/sanity"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"srvlab.io/rds-csi/internal/loopdev"
	"srvlab.io/rds-csi/internal/testenv"
	"srvlab.io/rds-csi/nvme"
	"srvlab.io/rds-csi/nvme/loopback"
	"srvlab.io/rds-csi/routeros/sim"
	"srvlab.io/rds-csi/test/e2e/sanityrun"
)

// sanityAllChildEnv selects, in a child process of this test binary, the access type of
// one csi-sanity run (Ginkgo runs one suite per process, and a child's mounts live in a
// mount namespace of its own that ends with it).
const sanityAllChildEnv = "RDS_CSI_SANITY_ALL"

// sanityAllNodeID is the node the whole driver serves.
const sanityAllNodeID = "sanity-all-node"

// TestSanityWholeDriver runs the csi-sanity conformance suite against the whole driver as
// main runs it (--mode=all: controller and node on one socket, built by parseConfig and
// serve) over the routeros simulator, with the loop-device stand-in for NVMe/TCP: real
// mkfs, mounts and device nodes. Every controller and node spec must pass, once with
// filesystem volumes, and the node specs again with raw block volumes; a spec may be
// skipped only for a capability the driver does not advertise.
func TestSanityWholeDriver(t *testing.T) {
	if mode := os.Getenv(sanityAllChildEnv); mode != "" {
		sanityAllRun(t, mode)
		return
	}
	if os.Geteuid() != 0 {
		testenv.Missing(t, "csi-sanity of the whole driver needs root (loop devices, mkfs and mounts)")
	}
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		testenv.Missing(t, "csi-sanity of the whole driver needs /dev/loop-control (the loop driver)")
	}
	for _, mode := range []string{"mount", "block"} {
		t.Run(mode, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestSanityWholeDriver$", "-test.v", "-test.count=1", "-test.timeout=7m", "-ginkgo.no-color")
			cmd.Env = append(os.Environ(), sanityAllChildEnv+"="+mode)
			cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS}
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("csi-sanity (%s volumes): %v; the child's output:\n%s", mode, err, out)
			}
			for _, line := range strings.Split(string(out), "\n") {
				if _, result, ok := strings.Cut(line, "csi-sanity ("); ok {
					t.Log("csi-sanity (" + result)
				}
			}
		})
	}
}

// sanityAllRun is the child: the simulator, the driver in this process, and the suite.
func sanityAllRun(t *testing.T, accessType string) {
	ts := sim.StartTest(t, sim.Options{})
	// The cluster's view for fencing: the node plugin registered (a CSINode lists it), no
	// VolumeAttachments yet. Publishing to any other node is NotFound.
	kube := startFakeKube(t)
	kube.addNode(sanityAllNodeID, sanityAllNodeID)
	dir := t.TempDir()
	host, port, err := net.SplitHostPort(ts.Addr)
	if err != nil {
		t.Fatal(err)
	}
	socket := filepath.Join(dir, "csi.sock")
	cfg, err := parseConfig([]string{
		"--mode=all",
		"--endpoint=unix://" + socket,
		"--node-id=" + sanityAllNodeID,
		"--kubeconfig=" + kube.kubeconfigFile(t),
		"--metrics-address=",
		"--log-level=debug",
		"--rds-address=" + host,
		"--rds-ssh-port=" + port,
		"--rds-user=" + ts.User,
		"--rds-key-file=" + ts.KeyFile,
		"--rds-known-hosts=" + ts.KnownHostsFile,
		// csi-sanity's names are no valid slots: the controller derives vol-<hash> IDs.
		"--managed-nqn-prefix=" + nqnPrefix + derivedIDPrefix,
		"--nvme-host-dir=" + filepath.Join(dir, "nvme"),
		"--state-dir=" + filepath.Join(dir, "state"),
	}, func(string) string { return "" }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.validate(); err != nil {
		t.Fatal(err)
	}
	// The loop-device stand-in attaches what the simulator exports (its .nvme-exports links).
	newAttacher = func(cfg *Config, guard *nvme.Guard, log *slog.Logger, _ *metrics) (attacher, error) {
		return loopback.New(loopback.Config{
			ExportsDir: filepath.Join(ts.Dir(), sim.ExportsDirName),
			StateFile:  filepath.Join(cfg.StateDir, "loopback.json"),
			Guard:      guard,
			Logger:     log,
		})
	}
	logPath := filepath.Join(dir, "driver.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	ctx, stop := context.WithCancel(context.Background())
	var serveErr error
	served := make(chan struct{})
	go func() {
		defer close(served)
		serveErr = serve(ctx, cfg, newLogger(logFile, "text", "debug"))
	}()
	defer func() {
		stop()
		select {
		case <-served:
			if serveErr != nil {
				t.Errorf("serve: %v", serveErr)
			}
		case <-time.After(time.Minute):
			t.Error("the driver did not shut down within a minute")
		}
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			lines := strings.Split(string(b), "\n")
			t.Logf("driver log (last 200 of %d lines):\n%s", len(lines), strings.Join(lines[max(0, len(lines)-200):], "\n"))
		}
	}()
	sanityAllWaitReady(t, socket, served)
	// Runs after the driver stopped (deferred calls run last-in first-out).
	defer detachLoopsUnder(t, ts.Dir())

	sc := sanity.NewTestConfig()
	sc.Address = "unix://" + socket
	sc.TargetPath = filepath.Join(dir, "target")
	sc.StagingPath = filepath.Join(dir, "staging")
	sc.TestVolumeAccessType = accessType
	sc.TestVolumeSize = 64 << 20
	sc.TestVolumeExpandSize = 128 << 20
	sc.TestNodeVolumeAttachLimit = true
	focus := "" // every spec with filesystem volumes
	if accessType == "block" {
		focus = sanityrun.NodeSpecs
	}
	res, err := sanityrun.Run(t, sc, focus)
	if err != nil {
		t.Fatal(err)
	}
	if !res.OK() {
		t.Errorf("csi-sanity (%s volumes) did not pass: %v", accessType, res)
	} else {
		t.Logf("csi-sanity (%s volumes): %v", accessType, res)
	}
}

// sanityAllWaitReady waits until the driver serves CSI and its Probe says ready.
func sanityAllWaitReady(t *testing.T, socket string, served <-chan struct{}) {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case <-served:
			t.Fatal("the driver stopped at start (its error follows)")
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		r, err := csi.NewIdentityClient(conn).Probe(ctx, &csi.ProbeRequest{})
		cancel()
		if err == nil && r.GetReady().GetValue() {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the driver was not ready within 30s: %v, ready=%v", err, strconv.FormatBool(r.GetReady().GetValue()))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// detachLoopsUnder detaches the loop devices still attached to files under dir once the
// run is over: a csi-sanity spec that deletes a volume it never unstaged leaves its loop
// device behind, and the machine (CI's too) would collect them run after run. Each is logged.
func detachLoopsUnder(t *testing.T, dir string) {
	names, err := filepath.Glob("/sys/block/loop*/loop/backing_file")
	if err != nil {
		t.Errorf("list loop devices: %v", err)
		return
	}
	for _, f := range names {
		b, err := os.ReadFile(f)
		if err != nil || !strings.HasPrefix(string(b), dir+"/") {
			continue
		}
		dev := "/dev/" + filepath.Base(filepath.Dir(filepath.Dir(f)))
		t.Logf("detaching %s left on %s", dev, strings.TrimSpace(string(b)))
		if err := loopdev.Detach(dev); err != nil {
			t.Errorf("detach %s: %v", dev, err)
		}
	}
}
