//go:build e2e

package e2e

import (
	"flag"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"
)

// The suite's fixed layout inside the VM.
const (
	// managedPrefix is what the scenarios' node instances are started with; the scenarios
	// name their volumes pvc-<uuid> like the external-provisioner does.
	managedPrefix = "nqn.2000-02.com.mikrotik:pvc-"
	// sanityPrefix is the csi-sanity instance's: csi-sanity's names are no valid slots, so
	// the controller derives vol-<hash> IDs for them.
	sanityPrefix = "nqn.2000-02.com.mikrotik:vol-"
	// defaultNQNPrefix + volume ID is the NQN the controller asks the RDS for.
	defaultNQNPrefix = "nqn.2000-02.com.mikrotik:"
	simListen        = "127.0.0.1:2222"
	nvmeAddress      = "127.0.0.1"
	nvmePort         = 4420
	driverName       = "rds.csi.srvlab.io"
	// simDir is on /srv/nvmet, ext4 over a RAM-backed loop device: nvmet's file backend
	// needs O_DIRECT, which tmpfs lacks.
	simDir = "/srv/nvmet/rds"
	// simVolumeDir is where the controller puts volume files (its default --rds-volume-path).
	simVolumeDir = simDir + "/storage-pool/metal-csi"
)

var (
	flagWork   = flag.String("e2e.work", envOr("RDS_E2E_WORK", "/run/e2e"), "scratch directory for sockets, state, keys, logs and mount points")
	flagBinDir = flag.String("e2e.bin", os.Getenv("RDS_E2E_BIN_DIR"), "directory holding the static rds-csi and rds-sim binaries (default: beside the test binary)")
)

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// vmRunner is set to 1 by the VM runner (test/vm/run-e2e.sh): there, as in CI, a missing
// prerequisite fails the suite instead of skipping it.
const vmRunner = "RDS_E2E_REQUIRED"

func TestMain(m *testing.M) {
	flag.Parse()
	if mode := os.Getenv(sanityChildEnv); mode != "" {
		os.Exit(sanityChild(mode))
	}
	start := time.Now()
	code := m.Run()
	failed := results.print(time.Since(start))
	if code == 0 && failed > 0 {
		code = 1
	}
	os.Exit(code)
}

// results collects one line per step of the suite for the closing summary.
var results steps

type steps struct {
	mu   sync.Mutex
	list []stepResult
}

type stepResult struct {
	name string
	ok   bool
	took time.Duration
}

func (s *steps) add(name string, ok bool, took time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.list = append(s.list, stepResult{name, ok, took})
}

// print writes the summary and returns the number of failed steps.
func (s *steps) print(wall time.Duration) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	passed, failed := 0, 0
	fmt.Println("=== e2e summary")
	for _, r := range s.list {
		verdict := "PASS"
		if r.ok {
			passed++
		} else {
			verdict = "FAIL"
			failed++
		}
		fmt.Printf("    %s  %6.1fs  %s\n", verdict, r.took.Seconds(), r.name)
	}
	fmt.Printf("e2e: %d passed, %d failed (%.0fs)\n", passed, failed, wall.Seconds())
	return failed
}

// TestE2E is the whole suite, in order: the environment (simulator, driver, unmanaged
// subsystem), csi-sanity in both access types, the scenarios, and shutdown. Each step is a
// subtest; every step ends by proving the unmanaged subsystem is untouched.
func TestE2E(t *testing.T) {
	e := setUp(t)
	for _, s := range []struct {
		name string
		run  func(*testing.T, *env)
	}{
		{"csi-sanity, filesystem volumes", func(t *testing.T, e *env) { e.sanity(t, "mount") }},
		{"csi-sanity node specs, block volumes", func(t *testing.T, e *env) { e.sanity(t, "block") }},
		{"ext4: write on one node, read back on a second node", func(t *testing.T, e *env) { e.twoNodes(t, mountCap("ext4")) }},
		{"xfs: write on one node, read back on a second node", func(t *testing.T, e *env) { e.twoNodes(t, mountCap("xfs")) }},
		{"block: write on one node, read back on a second node", func(t *testing.T, e *env) { e.twoNodes(t, blockCap()) }},
		{"ext4: online expansion while published", func(t *testing.T, e *env) { e.expandOnline(t, mountCap("ext4")) }},
		{"xfs: online expansion while published", func(t *testing.T, e *env) { e.expandOnline(t, mountCap("xfs")) }},
		{"block: online expansion while published", func(t *testing.T, e *env) { e.expandOnline(t, blockCap()) }},
		{"RDS reboot with a writer running", func(t *testing.T, e *env) { e.rdsReboot(t) }},
		{"ctrl_loss expiry, then the node heals without a restart", func(t *testing.T, e *env) { e.ctrlLossHeal(t) }},
		{"node plugin SIGKILLed between stage and publish", func(t *testing.T, e *env) { e.killBetweenStageAndPublish(t) }},
		{"takeover of the earlier driver's volumes in use, empty then deleted then corrupt state dir", func(t *testing.T, e *env) { e.takeover(t) }},
		{"node plugin SIGKILLed, then SIGTERMed, with writers on ext4, xfs and block", func(t *testing.T, e *env) { e.killWithWriters(t) }},
		{"a connection abandoned between connect and record is swept", func(t *testing.T, e *env) { e.abandonedConnection(t) }},
		{"multipath: a writer rides path 1 going down, given up and reconnected by the node", func(t *testing.T, e *env) { e.multipath(t) }},
		{"multipath: a path the RDS refuses does not fail the volume", func(t *testing.T, e *env) { e.multipathRefusedPath(t) }},
	} {
		e.step(t, s.name, func(t *testing.T) { s.run(t, e) })
	}
	e.step(t, "shutdown leaves the unmanaged subsystem alone", e.shutdown)
}

// step runs one named part of the suite as a subtest, records it for the summary, proves
// the unmanaged subsystem survived it, and on failure shows the processes' recent logs.
// A step left out by -test.run is not recorded.
func (e *env) step(t *testing.T, name string, f func(*testing.T)) {
	start, ran := time.Now(), false
	ok := t.Run(name, func(t *testing.T) {
		ran = true
		f(t)
		if e.unmanaged != nil {
			e.unmanaged.check(t, "after: "+name)
		}
	})
	if !ran {
		return
	}
	results.add(name, ok, time.Since(start))
	if !ok {
		e.showLogs(t)
	}
}
