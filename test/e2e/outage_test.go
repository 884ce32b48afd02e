//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"

	"srvlab.io/rds-csi/internal/vmsys"
)

// writer is an application writing to a volume: fixed-size chunks into a file, each
// fsynced, round-robin over a few slots, until told to stop. It remembers what the file
// must hold.
type writer struct {
	path  string
	chunk int
	slots int

	mu     sync.Mutex
	n      int // chunks written and synced
	err    error
	expect []byte

	stopOnce sync.Once
	stopc    chan struct{}
	done     chan struct{}
}

func startWriter(t *testing.T, path string) *writer {
	w := &writer{path: path, chunk: 64 << 10, slots: 32, stopc: make(chan struct{}), done: make(chan struct{})}
	w.expect = make([]byte, w.chunk*w.slots)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	// A failed test must not leave it writing into a mount the cleanup is to remove.
	t.Cleanup(func() {
		w.stop()
		select {
		case <-w.done:
		case <-time.After(time.Minute):
		}
	})
	go func() {
		defer close(w.done)
		defer f.Close()
		for i := 0; ; i++ {
			select {
			case <-w.stopc:
				return
			default:
			}
			data := pattern(fmt.Sprint(path, i), w.chunk)
			off := (i % w.slots) * w.chunk
			_, err := f.WriteAt(data, int64(off))
			if err == nil {
				err = f.Sync()
			}
			w.mu.Lock()
			if err != nil {
				w.err = fmt.Errorf("write %d at %d: %w", i, off, err)
				w.mu.Unlock()
				return
			}
			copy(w.expect[off:], data)
			w.n++
			w.mu.Unlock()
			time.Sleep(10 * time.Millisecond)
		}
	}()
	return w
}

func (w *writer) stop() { w.stopOnce.Do(func() { close(w.stopc) }) }

func (w *writer) written() (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.n, w.err
}

// finish stops the writer, requires it to end without an error within d, and returns
// what the file must now hold.
func (w *writer) finish(t *testing.T, d time.Duration) []byte {
	t.Helper()
	w.stop()
	select {
	case <-w.done:
	case <-time.After(d):
		t.Fatalf("the writer is still blocked %v after the target came back", d)
	}
	n, err := w.written()
	if err != nil {
		t.Fatalf("the writer failed after %d chunks: %v", n, err)
	}
	return w.expect[:min(n, w.slots)*w.chunk]
}

// waitCondition polls NodeGetVolumeHealth (where CSI 1.13 reports the volume condition)
// until the volume reports an adverse condition (abnormal) or none (normal), and returns
// what it saw.
func (a *attachment) waitCondition(t *testing.T, abnormal bool, d time.Duration) string {
	t.Helper()
	var last []*csi.VolumeHealth_VolumeHealthEntry
	if waitFor(d, func() bool {
		last = a.health(t)
		return (len(last) > 0) == abnormal
	}) {
		return fmt.Sprint(last)
	}
	t.Fatalf("volume health did not become abnormal=%v within %v: last %v", abnormal, d, last)
	return ""
}

// health is the node's NodeGetVolumeHealth statuses of the volume (none: healthy).
func (a *attachment) health(t testing.TB) []*csi.VolumeHealth_VolumeHealthEntry {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r, err := a.d.node.NodeGetVolumeHealth(ctx, &csi.NodeGetVolumeHealthRequest{
		VolumeId: a.v.GetVolumeId(), VolumePublishPath: a.target, StagingTargetPath: a.staging,
	})
	if err != nil {
		t.Fatalf("NodeGetVolumeHealth %s: %v", a.v.GetVolumeId(), err)
	}
	if id := r.GetVolumeHealth().GetVolumeId(); id != a.v.GetVolumeId() {
		t.Fatalf("NodeGetVolumeHealth %s answered for volume %q", a.v.GetVolumeId(), id)
	}
	return r.GetVolumeHealth().GetHealthStatuses()
}

// rdsReboot: the target goes away for longer than reconnect_delay while an application
// writes, then comes back. With ctrl_loss_tmo=-1 (the default) the kernel queues I/O and
// reconnects: the writer finishes without an error, nothing is remounted read-only, the
// names stay, and the volume condition goes abnormal during the outage and normal after.
func (e *env) rdsReboot(t *testing.T) {
	const reconnectDelay = 2
	v := e.createVolume(t, 64*mib, mountCap("ext4"), map[string]string{"reconnectDelay": fmt.Sprint(reconnectDelay)})
	a := e.attach(t, e.node1, v)
	a.publish(t)
	dev := a.stagedDevice(t)
	for _, c := range vmsys.ControllersOf(v.nqn) {
		dir := filepath.Join("/sys/class/nvme", c.Name)
		if got := vmsys.Attr(filepath.Join(dir, "ctrl_loss_tmo")); got != "off" {
			t.Errorf("controller %s ctrl_loss_tmo = %s, want off (the driver's default -1)", c.Name, got)
		}
		if got := vmsys.Attr(filepath.Join(dir, "reconnect_delay")); got != fmt.Sprint(reconnectDelay) {
			t.Errorf("controller %s reconnect_delay = %s, want %d (StorageClass reconnectDelay)", c.Name, got, reconnectDelay)
		}
	}
	a.waitCondition(t, false, 10*time.Second)

	w := startWriter(t, filepath.Join(a.target, "journal.bin"))
	if !waitFor(10*time.Second, func() bool { n, err := w.written(); return n >= 5 || err != nil }) {
		t.Fatal("the writer made no progress before the outage")
	}
	port := nvmetPortOf(t, v.nqn, "")
	down := time.Now()
	portDown(t, port)
	msg := a.waitCondition(t, true, 15*time.Second)
	t.Logf("during the outage, after %v: condition abnormal: %s", time.Since(down).Round(time.Millisecond), msg)
	if rest := time.Duration(2*reconnectDelay+1)*time.Second - time.Since(down); rest > 0 {
		time.Sleep(rest)
	}
	stalled, _ := w.written()
	portUp(t, port)
	up := time.Now()
	t.Logf("target down for %v, writer at %d chunks", up.Sub(down).Round(time.Millisecond), stalled)

	if !waitFor(time.Duration(reconnectDelay+10)*time.Second, func() bool {
		cs := vmsys.ControllersOf(v.nqn)
		return len(cs) > 0 && cs[0].State == "live"
	}) {
		t.Fatalf("controllers of %s not live again %v after the target came back: %+v", v.nqn, time.Since(up), vmsys.ControllersOf(v.nqn))
	}
	msg = a.waitCondition(t, false, 20*time.Second)
	t.Logf("%v after the target came back: condition normal again (%s)", time.Since(up).Round(time.Millisecond), msg)
	if !waitFor(30*time.Second, func() bool { n, err := w.written(); return n >= stalled+5 || err != nil }) {
		n, err := w.written()
		t.Fatalf("the writer did not resume after the outage: %d chunks (%d before), %v", n, stalled, err)
	}
	expect := w.finish(t, 30*time.Second)

	for _, p := range []string{a.staging, a.target} {
		if m := oneMount(t, p); m.majmin != dev {
			t.Errorf("%s is now mounted from %s, was %s: a plain reconnect must keep the device", p, m.majmin, dev)
		}
	}
	checkFile(t, filepath.Join(a.target, "journal.bin"), expect)
	// What the writer synced is on the target, not only in the page cache: read it back
	// after a fresh attach.
	a.detach(t)
	b := e.attach(t, e.node1, v)
	b.publish(t)
	checkFile(t, filepath.Join(b.target, "journal.bin"), expect)
	b.detach(t)
	e.deleteVolume(t, v)
}

// ctrlLossHeal: with a short ctrl_loss_tmo the target stays away until the kernel gives
// the controller up (the disk vanishes under the mounts), then comes back. The node must
// heal on its own, without any RPC or restart: reconnect, replace the stale staging mount
// and the publish bind mount at the same paths, with the data intact and writable.
func (e *env) ctrlLossHeal(t *testing.T) {
	v := e.createVolume(t, 64*mib, mountCap("ext4"), map[string]string{"ctrlLossTmo": "3", "reconnectDelay": "1"})
	a := e.attach(t, e.node1, v)
	a.publish(t)
	old := a.stagedDevice(t)
	for _, c := range vmsys.ControllersOf(v.nqn) {
		if got := vmsys.Attr(filepath.Join("/sys/class/nvme", c.Name, "ctrl_loss_tmo")); got != "3" {
			t.Fatalf("controller %s ctrl_loss_tmo = %s, want 3 (StorageClass ctrlLossTmo)", c.Name, got)
		}
	}
	data := pattern(v.GetVolumeId(), 2*int(mib))
	writeSync(t, filepath.Join(a.target, "before.bin"), data)

	port := nvmetPortOf(t, v.nqn, "")
	down := time.Now()
	portDown(t, port)
	if !waitFor(30*time.Second, func() bool { return len(vmsys.ControllersOf(v.nqn)) == 0 }) {
		portUp(t, port)
		t.Fatalf("the kernel did not give up the controller within 30s of ctrl_loss_tmo=3: %+v", vmsys.ControllersOf(v.nqn))
	}
	t.Logf("controller lost %v after the target went away", time.Since(down).Round(time.Millisecond))
	portUp(t, port)
	up := time.Now()

	var disk, now string
	healed := waitFor(45*time.Second, func() bool {
		var ok bool
		if disk, now, ok = vmsys.LiveDisk(v.nqn); !ok || now == old {
			return false
		}
		s, p := mountsAt(t, a.staging), mountsAt(t, a.target)
		return len(s) == 1 && len(p) == 1 && s[0].majmin == now && p[0].majmin == now
	})
	if !healed {
		t.Fatalf("not healed 45s after the target came back: disk %s (%s, was %s), staging %+v, target %+v",
			disk, now, old, mountsAt(t, a.staging), mountsAt(t, a.target))
	}
	t.Logf("healed %v after the target came back: %s → %s (%s)", time.Since(up).Round(time.Millisecond), old, now, disk)
	oneMount(t, a.staging)
	oneMount(t, a.target)
	checkFile(t, filepath.Join(a.target, "before.bin"), data)
	after := pattern(v.GetVolumeId()+"/after", int(mib))
	writeSync(t, filepath.Join(a.target, "after.bin"), after)
	a.waitCondition(t, false, 20*time.Second)
	a.detach(t)
	b := e.attach(t, e.node1, v)
	b.publish(t)
	checkFile(t, filepath.Join(b.target, "before.bin"), data)
	checkFile(t, filepath.Join(b.target, "after.bin"), after)
	b.detach(t)
	e.deleteVolume(t, v)
}
