package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"srvlab.io/rds-csi/internal/loopdev"
	"srvlab.io/rds-csi/internal/testenv"
	"srvlab.io/rds-csi/mount"
	"srvlab.io/rds-csi/nvme/loopback"
	"srvlab.io/rds-csi/routeros/sim"
)

// loopEnv is a node service over the loop-device stand-in for NVMe, with volumes made by
// the RouterOS simulator, and kubelet-like paths under a short temporary root.
type loopEnv struct {
	t       testing.TB
	root    string
	sim     *sim.Sim
	cfg     *Config
	n       *nodeService
	stop    context.CancelFunc
	formats atomic.Int32 // mkfs runs the node asked for, over every restart
	probes  atomic.Int32 // disk probes the node made itself (mkfs's own are not counted)
}

func newLoopEnv(t testing.TB) *loopEnv {
	t.Helper()
	testenv.Require(t, loopdev.Available())
	root, err := os.MkdirTemp("", "rn")
	if err != nil {
		t.Fatal(err)
	}
	e := &loopEnv{t: t, root: root}
	t.Cleanup(e.cleanup)
	e.sim, err = sim.New(sim.Options{Dir: filepath.Join(root, "rds")})
	if err != nil {
		t.Fatal(err)
	}
	e.cfg = &Config{
		NodeID: "node-1", ManagedNQNPrefix: testPrefix, StateDir: filepath.Join(root, "state"),
		SysfsRoot: "/sys", DevRoot: "/dev", ProcRoot: "/proc", KubeletDir: filepath.Join(root, "kubelet"), HealInterval: 50 * time.Millisecond, MountStormLimit: 100,
	}
	for _, d := range []string{"kubelet", "pods"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o750); err != nil {
			t.Fatal(err)
		}
	}
	e.start()
	return e
}

// start builds a node service (a fresh process, as far as the node is concerned) and
// runs its background work.
func (e *loopEnv) start() {
	e.t.Helper()
	att, err := loopback.New(loopback.Config{
		ExportsDir: filepath.Join(e.sim.Dir(), sim.ExportsDirName), StateFile: filepath.Join(e.cfg.StateDir, "loopback.json"),
		Guard: testGuard(e.t), Logger: testLogger(e.t),
	})
	if err != nil {
		e.t.Fatal(err)
	}
	n, err := newNodeServiceWith(e.cfg, testLogger(e.t), newMetrics(), testGuard(e.t), att)
	if err != nil {
		e.t.Fatal(err)
	}
	format := n.fs.format
	n.fs.format = func(ctx context.Context, device, fstype string) error {
		e.formats.Add(1)
		return format(ctx, device, fstype)
	}
	probe := n.fs.probe
	n.fs.probe = func(ctx context.Context, device string) (mount.ProbeResult, error) {
		e.probes.Add(1)
		return probe(ctx, device)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go n.run(ctx)
	e.n, e.stop = n, func() { cancel(); n.close() }
	select { // tests connect behind the node's back: the start-up sweep must be over
	case <-n.swept:
	case <-time.After(time.Minute):
		e.t.Fatal("the start-up sweep did not finish within a minute")
	}
}

// restart stops the node service and starts a new one over the same state.
func (e *loopEnv) restart() {
	e.stop()
	e.start()
}

// cleanup unmounts everything under the root (deepest first), detaches every loop device
// of the simulator's files and removes the root, whatever state a failed test left.
func (e *loopEnv) cleanup() {
	if e.stop != nil {
		e.stop()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	entries, err := mount.List(ctx)
	if err != nil {
		e.t.Errorf("cleanup: %v", err)
	}
	var points []string
	for _, m := range entries {
		if strings.HasPrefix(m.Mountpoint, e.root+"/") && !slices.Contains(points, m.Mountpoint) {
			points = append(points, m.Mountpoint)
		}
	}
	slices.SortFunc(points, func(a, b string) int { return len(b) - len(a) })
	for _, p := range points {
		if err := mount.UnmountAll(ctx, p); err != nil {
			e.t.Errorf("cleanup: %v", err)
		}
	}
	_ = filepath.WalkDir(e.root, func(path string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(path, ".img") {
			devs, _ := loopdev.Find(path)
			for _, dev := range devs {
				if err := dev.Detach(); err != nil {
					e.t.Errorf("cleanup: %v", err)
				}
			}
		}
		return nil
	})
	if e.sim != nil {
		e.sim.Close()
	}
	if len(points) == 0 || !e.t.Failed() {
		os.RemoveAll(e.root) // a test directory of our own, with everything unmounted
	}
}

func testLogger(t testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func nodeCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// volume is one simulated volume and the kubelet-like paths of one use of it.
type volume struct {
	id, nqn, file string
	vc            map[string]string
	staging       string
	cap           *csi.VolumeCapability
}

// createVolume adds an exported file disk to the simulated RDS, as the controller does.
func (e *loopEnv) createVolume(name, size string, cap *csi.VolumeCapability, vc ...string) *volume {
	e.t.Helper()
	id := "pvc-" + name
	v := &volume{id: id, nqn: testPrefix + name, cap: cap,
		staging: filepath.Join(e.root, "kubelet", id), file: e.sim.HostPath("/storage-pool/metal-csi/" + id + ".img")}
	line := fmt.Sprintf(`/disk add type=file slot=%s file-path=/storage-pool/metal-csi/%s.img file-size=%s nvme-tcp-export=yes nvme-tcp-server-port=4420 nvme-tcp-server-nqn="%s"`,
		id, id, size, v.nqn)
	if _, err := e.sim.Exec(nodeCtx(e.t), line); err != nil {
		e.t.Fatal(err)
	}
	v.vc = map[string]string{contextNQN: v.nqn, paramNVMeAddress: "127.0.0.1", paramNVMePort: "4420", "volumePath": "/storage-pool/metal-csi"}
	for i := 0; i+1 < len(vc); i += 2 {
		v.vc[vc[i]] = vc[i+1]
	}
	if err := os.MkdirAll(v.staging, 0o750); err != nil { // kubelet creates it
		e.t.Fatal(err)
	}
	return v
}

func (e *loopEnv) stage(v *volume) error {
	_, err := e.n.NodeStageVolume(nodeCtx(e.t), &csi.NodeStageVolumeRequest{
		VolumeId: v.id, StagingTargetPath: v.staging, VolumeCapability: v.cap, VolumeContext: v.vc})
	return err
}

func (e *loopEnv) publish(v *volume, target string, readOnly bool) error {
	_, err := e.n.NodePublishVolume(nodeCtx(e.t), &csi.NodePublishVolumeRequest{
		VolumeId: v.id, StagingTargetPath: v.staging, TargetPath: target, VolumeCapability: v.cap, Readonly: readOnly, VolumeContext: v.vc})
	return err
}

func (e *loopEnv) unpublish(v *volume, target string) error {
	_, err := e.n.NodeUnpublishVolume(nodeCtx(e.t), &csi.NodeUnpublishVolumeRequest{VolumeId: v.id, TargetPath: target})
	return err
}

func (e *loopEnv) unstage(v *volume) error {
	_, err := e.n.NodeUnstageVolume(nodeCtx(e.t), &csi.NodeUnstageVolumeRequest{VolumeId: v.id, StagingTargetPath: v.staging})
	return err
}

// target returns a publish target path for pod (its parent exists, as kubelet makes it).
func (e *loopEnv) target(pod string) string {
	dir := filepath.Join(e.root, "pods", pod)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		e.t.Fatal(err)
	}
	return filepath.Join(dir, "vol")
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func nodeWantCode(t testing.TB, err error, code codes.Code, msg string) {
	t.Helper()
	if status.Code(err) != code {
		t.Fatalf("code %v (%v), want %v", status.Code(err), err, code)
	}
	if !strings.Contains(status.Convert(err).Message(), msg) {
		t.Fatalf("message %q lacks %q", status.Convert(err).Message(), msg)
	}
}

// mountsAt lists the mounts stacked at path.
func mountsAt(t testing.TB, path string) []*mount.Entry {
	t.Helper()
	entries, err := mount.ByMountPoint(nodeCtx(t), path)
	if err != nil {
		t.Fatal(err)
	}
	return entries
}

// attachedDevices lists the loop devices of a volume's backing file.
func attachedDevices(t testing.TB, v *volume) []loopdev.Device {
	t.Helper()
	devs, err := loopdev.Find(v.file)
	if err != nil {
		t.Fatal(err)
	}
	return devs
}

// pattern is deterministic test data.
func pattern(seed string, n int) []byte {
	var b bytes.Buffer
	for i := 0; b.Len() < n; i++ {
		sum := sha256.Sum256([]byte(fmt.Sprintf("%s/%d", seed, i)))
		b.Write(sum[:])
	}
	return b.Bytes()[:n]
}

// writeSync writes data to path and fsyncs it.
func writeSync(t testing.TB, path string, data []byte, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(data, off); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
}

// checkData reads len(want) bytes of path at off and compares.
func checkData(t testing.TB, path string, want []byte, off int64) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got := make([]byte, len(want))
	if _, err := f.ReadAt(got, off); err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s: data at %d differs from what was written", path, off)
	}
}

func fileHash(t testing.TB, path string) [32]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return [32]byte(h.Sum(nil))
}

// nodeWaitFor polls cond every 10 ms until it holds or d passes.
func nodeWaitFor(d time.Duration, cond func() bool) bool {
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		if cond() {
			return true
		}
		time.Sleep(10 * time.Millisecond)
	}
	return cond()
}
