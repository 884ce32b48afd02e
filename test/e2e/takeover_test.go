//go:build e2e

package e2e

import (
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"golang.org/x/sys/unix"

	"srvlab.io/rds-csi/internal/loopdev"
	"srvlab.io/rds-csi/internal/vmsys"
)

// Issue 13's scenarios: nothing the node plugin does at start, restart or with a lost
// state directory may cut a volume it cannot prove it connected, or one anything uses.

// kubeletDir is the kubelet root the suite's node plugins are given (--kubelet-dir): the
// takeover scenario lays volumes out there exactly as kubelet 1.34 and the earlier driver
// do.
func (d *driver) kubeletDir() string { return filepath.Join(d.dir, "kubelet") }

func (d *driver) fsStaging(pv string) string {
	sum := sha256.Sum256([]byte(pv))
	return filepath.Join(d.kubeletDir(), "plugins", "kubernetes.io", "csi", driverName, fmt.Sprintf("%x", sum), "globalmount")
}

func (d *driver) fsTarget(pod, pv string) string {
	return filepath.Join(d.kubeletDir(), "pods", pod, "volumes", "kubernetes.io~csi", pv, "mount")
}

func (d *driver) blockDir(parts ...string) string {
	return filepath.Join(append([]string{d.kubeletDir(), "plugins", "kubernetes.io", "csi", "volumeDevices"}, parts...)...)
}

// sweeps counts the start-up sweeps the plugin finished, from its log.
func (d *driver) sweeps() int {
	b, _ := os.ReadFile(d.logPath)
	return strings.Count(string(b), "NVMe sweep done")
}

// startAndSweep starts (or restarts) the plugin and waits for its start-up sweep.
func (d *driver) startAndSweep(t *testing.T) {
	t.Helper()
	before := d.sweeps()
	if d.running() {
		t.Fatalf("%s is running", d.name)
	}
	d.start(t)
	if !waitFor(30*time.Second, func() bool { return d.sweeps() > before }) {
		t.Fatalf("%s did not finish its start-up sweep within 30s:\n%s", d.name, d.tail(30))
	}
}

// lastSweep is the plugin's last "NVMe sweep done" log line.
func (d *driver) lastSweep() string {
	b, _ := os.ReadFile(d.logPath)
	lines := strings.Split(string(b), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if strings.Contains(lines[i], "NVMe sweep done") {
			return lines[i]
		}
	}
	return ""
}

// earlierConnect connects nqn the way the earlier driver did with nvme-cli: the host's
// /etc/nvme identity, ctrl_loss_tmo=-1, its reconnect_delay; and waits for its disk.
func earlierConnect(t *testing.T, id hostIdentity, nqn string) (disk, majmin string) {
	t.Helper()
	fabricsConnect(t, fmt.Sprintf("transport=tcp,traddr=%s,trsvcid=%d,nqn=%s,hostnqn=%s,hostid=%s,ctrl_loss_tmo=-1,reconnect_delay=5",
		nvmeAddress, nvmePort, nqn, id.HostNQN, id.HostID))
	var ok bool
	if !waitFor(10*time.Second, func() bool { disk, majmin, ok = vmsys.LiveDisk(nqn); return ok }) {
		t.Fatalf("the disk of %s never appeared", nqn)
	}
	return disk, majmin
}

func mkdirs(t testing.TB, dirs ...string) {
	t.Helper()
	for _, d := range dirs {
		if err := os.MkdirAll(d, 0o750); err != nil {
			t.Fatal(err)
		}
	}
}

// requireConnected fails unless every NQN still has a live controller.
func requireConnected(t *testing.T, when string, nqns ...string) {
	t.Helper()
	for _, nqn := range nqns {
		cs := vmsys.ControllersOf(nqn)
		if len(cs) == 0 || cs[0].State != "live" {
			t.Fatalf("%s: %s is no longer connected: %+v", when, nqn, cs)
		}
	}
}

// requireWriting fails unless every writer made progress without an error.
func requireWriting(t *testing.T, when string, ws ...*writer) {
	t.Helper()
	for _, w := range ws {
		n0, _ := w.written()
		if !waitFor(10*time.Second, func() bool { n, err := w.written(); return n >= n0+5 || err != nil }) {
			t.Fatalf("%s: writer on %s stalled at %d chunks", when, w.path, n0)
		}
		if n, err := w.written(); err != nil {
			t.Fatalf("%s: writer on %s failed after %d chunks: %v", when, w.path, n, err)
		}
	}
}

// verifyWriter stops w and requires what it wrote to be on the volume.
func verifyWriter(t *testing.T, w *writer) {
	t.Helper()
	want := w.finish(t, 30*time.Second)
	f, err := os.Open(w.path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got := make([]byte, len(want))
	if _, err := f.ReadAt(got, 0); err != nil {
		t.Fatalf("read back %s: %v", w.path, err)
	}
	sameData(t, w.path, got, want)
}

// spoilState leaves the node's state directory as a failure would: gone, or every
// record truncated.
func spoilState(t *testing.T, d *driver, how string) {
	t.Helper()
	for _, sub := range []string{"volumes", "connections"} {
		dir := filepath.Join(d.stateDir, sub)
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			p := filepath.Join(dir, e.Name())
			var err error
			if how == "deleted" {
				err = os.Remove(p)
			} else {
				err = os.WriteFile(p, []byte(`{"version":1,"volumeId":"pvc-`), 0o600)
			}
			if err != nil {
				t.Fatal(err)
			}
		}
		if how == "deleted" {
			if err := os.Remove(dir); err != nil && !os.IsNotExist(err) {
				t.Fatal(err)
			}
		}
	}
}

// takeover: a node runs the earlier driver's volumes — an ext4 volume mounted at kubelet's
// staging path and bind-mounted into a pod with a writer on it, and a raw block volume
// with nothing at its staging path, a device node made with mknod at its publish path,
// kubelet's bind mount and loop-device lock on it and a "VM" writing through an open
// descriptor. Our plugin starts with an empty state directory, then again after the
// directory was deleted and after its records were truncated: nothing is disconnected,
// the writers never see an error; kubelet's calls adopt both volumes (no format), and
// its unpublish and unstage let go of them completely.
func (e *env) takeover(t *testing.T) {
	const nodeID, pod = "e2e-node-t", "pod-uid-1"
	id := e.writeIdentity(t, nodeID)
	d := e.newDriver(nodeID, "node")
	e.cluster.register(nodeID)
	fsV := e.createVolume(t, 64*mib, mountCap("ext4"), nil)
	blkV := e.createVolume(t, 64*mib, blockCap(), nil)
	fsPV, blkPV := fsV.GetVolumeId(), blkV.GetVolumeId()
	fsA := &attachment{e: e, d: d, v: fsV, staging: d.fsStaging(fsPV), target: d.fsTarget(pod, fsPV)}
	blkA := &attachment{e: e, d: d, v: blkV, staging: d.blockDir("staging", blkPV), target: d.blockDir("publish", blkPV, pod)}
	for _, a := range []*attachment{fsA, blkA} {
		t.Cleanup(func() { a.cleanUp(t) })
		ctx, cancel := rpcContext()
		r, err := e.node1.ctrl.ControllerPublishVolume(ctx, &csi.ControllerPublishVolumeRequest{
			VolumeId: a.v.GetVolumeId(), NodeId: nodeID, VolumeCapability: a.v.cap, VolumeContext: a.v.GetVolumeContext()})
		cancel()
		if err != nil {
			t.Fatalf("ControllerPublishVolume: %v", err)
		}
		a.publishCtx, a.controllerPublished = r.GetPublishContext(), true
	}

	// The earlier driver's filesystem volume, with a writer in the "pod".
	fsDisk, fsMajMin := earlierConnect(t, id, fsV.nqn)
	sh(t, 60*time.Second, "mkfs.ext4", "-q", "-F", "/dev/"+fsDisk)
	uuid := fsUUID(t, "/dev/"+fsDisk)
	mkdirs(t, fsA.staging, fsA.target)
	if err := unix.Mount("/dev/"+fsDisk, fsA.staging, "ext4", 0, ""); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(fsA.staging, fsA.target, "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Unmount(fsA.target, unix.MNT_DETACH); _ = unix.Unmount(fsA.staging, unix.MNT_DETACH) })
	fsW := startWriter(t, filepath.Join(fsA.target, "journal.bin"))

	// The earlier driver's raw block volume: mknod at the publish path; kubelet's bind mount
	// of it at the global map path and its loop-device lock there; a VM holding it open.
	blkDisk, blkMajMin := earlierConnect(t, id, blkV.nqn)
	mkdirs(t, blkA.staging, filepath.Dir(blkA.target), d.blockDir(blkPV, "dev"))
	var st unix.Stat_t
	if err := unix.Stat("/dev/"+blkDisk, &st); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mknod(blkA.target, unix.S_IFBLK|0o660, int(st.Rdev)); err != nil {
		t.Fatal(err)
	}
	mapPath := d.blockDir(blkPV, "dev", pod)
	writeFile(t, mapPath, "")
	if err := unix.Mount(blkA.target, mapPath, "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Unmount(mapPath, unix.MNT_DETACH) })
	lock, err := loopdev.Attach(context.Background(), mapPath, false)
	if err != nil {
		t.Fatalf("kubelet's loop lock on %s: %v", mapPath, err)
	}
	t.Cleanup(func() { _ = lock.Detach() })
	blkW := startWriter(t, blkA.target)
	requireWriting(t, "before our plugin starts", fsW, blkW)

	// Our plugin starts with an empty state directory.
	d.startAndSweep(t)
	t.Cleanup(func() {
		if d.running() {
			d.stop(t)
		}
	})
	requireConnected(t, "after our plugin started", fsV.nqn, blkV.nqn)
	requireWriting(t, "after our plugin started", fsW, blkW)
	var unowned int
	if s := d.lastSweep(); !strings.Contains(s, "unowned=") {
		t.Fatalf("no count of unowned subsystems in the sweep's log line: %s", s)
	} else if _, err := fmt.Sscan(s[strings.Index(s, "unowned=")+len("unowned="):], &unowned); err != nil || unowned < 2 {
		t.Fatalf("the sweep did not count both volumes as unowned (%d, %v): %s", unowned, err, s)
	}
	e.unmanaged.check(t, "after the takeover start")
	// kubelet asks for stats of volumes it mounted through the earlier driver.
	for path, want := range map[string]string{fsA.target: fsPV, mapPath: blkPV} {
		ctx, cancel := rpcContext()
		r, err := d.node.NodeGetVolumeStats(ctx, &csi.NodeGetVolumeStatsRequest{VolumeId: want, VolumePath: path})
		cancel()
		if err != nil || r.GetUsage()[0].GetTotal() == 0 {
			t.Fatalf("NodeGetVolumeStats %s at %s before adoption: %v, %v", want, path, r, err)
		}
	}

	adopt := func(when string) {
		t.Helper()
		for _, a := range []*attachment{fsA, blkA} {
			a.stage(t)
			a.publish(t)
		}
		if got := fsUUID(t, "/dev/"+fsDisk); got != uuid {
			t.Fatalf("%s: the earlier driver's filesystem was formatted again (UUID %s, was %s)", when, got, uuid)
		}
		if ms := mountsOf(t, fsMajMin); len(ms) != 2 {
			t.Fatalf("%s: %s has %d mounts, want the earlier driver's 2: %+v", when, fsMajMin, len(ms), ms)
		}
		if got := rdev(t, blkA.target); got != blkMajMin {
			t.Fatalf("%s: the block publish node is %s, want %s", when, got, blkMajMin)
		}
		fsA.stats(t)
		blkA.stats(t)
		requireWriting(t, when, fsW, blkW)
	}
	adopt("adoption by kubelet's calls")

	for _, how := range []string{"deleted", "truncated"} {
		d.kill(t)
		spoilState(t, d, how)
		d.startAndSweep(t)
		requireConnected(t, "state directory "+how, fsV.nqn, blkV.nqn)
		requireWriting(t, "state directory "+how, fsW, blkW)
		e.unmanaged.check(t, "after a restart with the state directory "+how)
		adopt("adoption after the state directory was " + how)
	}

	verifyWriter(t, fsW)
	verifyWriter(t, blkW) // closes the VM's descriptor
	if err := lock.Detach(); err != nil {
		t.Fatal(err)
	}
	if err := unix.Unmount(mapPath, 0); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(mapPath); err != nil {
		t.Fatal(err)
	}
	for _, a := range []*attachment{fsA, blkA} {
		a.detach(t) // unstage verifies no controller of this host is left
	}
	if ms := mountsOf(t, fsMajMin); len(ms) != 0 {
		t.Fatalf("after unstage, %s still has mounts: %+v", fsMajMin, ms)
	}
}

// killWithWriters: writers on ext4, xfs and block volumes staged by the plugin keep
// writing while it is SIGKILLed and started again, then stopped with SIGTERM and started
// again (a rolling update): nothing is disconnected, remounted or formatted, no write
// fails, and the data is all there afterwards.
func (e *env) killWithWriters(t *testing.T) {
	n := e.extraNode(t, "e2e-node-w")
	var as []*attachment
	var ws []*writer
	uuids := map[string]string{}
	for _, c := range []*csi.VolumeCapability{mountCap("ext4"), mountCap("xfs"), blockCap()} {
		v := e.createVolume(t, 320*mib, c, nil)
		a := e.attach(t, n, v)
		a.publish(t)
		path := a.target
		if !isBlock(c) {
			dev := a.stagedDevice(t)
			uuids[dev] = fsUUID(t, devPathOf(t, dev))
			path = filepath.Join(a.target, "journal.bin")
		}
		as, ws = append(as, a), append(ws, startWriter(t, path))
	}
	requireWriting(t, "before the kill", ws...)
	n.kill(t)
	requireWriting(t, "while the plugin is dead", ws...)
	n.startAndSweep(t)
	for _, a := range as {
		requireConnected(t, "after the restart", a.v.nqn)
	}
	requireWriting(t, "after the restart", ws...)
	for dev, uuid := range uuids {
		if got := fsUUID(t, devPathOf(t, dev)); got != uuid {
			t.Fatalf("%s was formatted again (UUID %s, was %s)", dev, got, uuid)
		}
		if ms := mountsOf(t, dev); len(ms) != 2 {
			t.Fatalf("%s has %d mounts after the restart, want 2 (staging + publish): %+v", dev, len(ms), ms)
		}
	}
	e.unmanaged.check(t, "after the SIGKILL restart")
	// A graceful stop and start, as a rolling DaemonSet update does it.
	n.stop(t)
	requireWriting(t, "while the plugin is stopped", ws...)
	n.startAndSweep(t)
	for _, a := range as {
		requireConnected(t, "after the graceful restart", a.v.nqn)
	}
	requireWriting(t, "after the graceful restart", ws...)
	e.unmanaged.check(t, "after the SIGTERM restart")
	for _, w := range ws {
		verifyWriter(t, w)
	}
	for _, a := range as {
		a.detach(t)
	}
}

// abandonedConnection: the plugin dies after connecting a volume and before recording it
// (here: its staging record is removed while it is down, which leaves exactly what such a
// crash leaves — the connection and its intent record). The start-up sweep proves the
// connection its own and unused, and disconnects it.
func (e *env) abandonedConnection(t *testing.T) {
	n := e.extraNode(t, "e2e-node-a")
	v := e.createVolume(t, 16*mib, blockCap(), nil)
	a := e.attach(t, n, v)
	if len(vmsys.ControllersOf(v.nqn)) == 0 {
		t.Fatal("staging connected nothing")
	}
	n.kill(t)
	if err := os.Remove(filepath.Join(n.stateDir, "volumes", v.GetVolumeId()+".json")); err != nil {
		t.Fatal(err)
	}
	n.startAndSweep(t)
	if cs := vmsys.ControllersOf(v.nqn); len(cs) != 0 {
		t.Fatalf("the sweep left the abandoned connection: %+v\n%s", cs, n.lastSweep())
	}
	a.staged = false
	a.detach(t)
}
