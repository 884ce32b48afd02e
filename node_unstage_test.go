package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"

	"srvlab.io/rds-csi/internal/loopdev"
	"srvlab.io/rds-csi/mount"
	"srvlab.io/rds-csi/nvme"
)

// inUseEvidence is one way something on the node uses a disk. make creates it on the
// volume's (loop) disk and returns how to take it away again.
type inUseEvidence struct {
	name string
	want string // in the refusal message
	make func(t *testing.T, e *loopEnv, v *volume, disk loopdev.Device) (remove func())
}

func mknodAt(t *testing.T, path string, d loopdev.Device) func() {
	t.Helper()
	must(t, os.MkdirAll(filepath.Dir(path), 0o750))
	must(t, unix.Mknod(path, unix.S_IFBLK|0o600, int(unix.Mkdev(d.Major, d.Minor))))
	return func() { must(t, os.Remove(path)) }
}

// inUseEvidences are the uses NodeUnstageVolume and the sweep must see (mount.Users has
// the table of each on its own, holders included).
var inUseEvidences = []inUseEvidence{
	{name: "a mount of the disk elsewhere", want: "is mounted at", make: func(t *testing.T, e *loopEnv, v *volume, d loopdev.Device) func() {
		mkfsFile(t, "ext4", d.Path)
		mnt := filepath.Join(e.root, "someone-else")
		must(t, os.MkdirAll(mnt, 0o750))
		opts, _ := mount.ParseOptions("ext4", nil)
		must(t, mount.Mount(nodeCtx(t), d.Path, mnt, "ext4", opts))
		return func() { must(t, mount.UnmountAll(context.Background(), mnt)) }
	}},
	{name: "a bind mount of its /dev node", want: "is bind-mounted at", make: func(t *testing.T, e *loopEnv, v *volume, d loopdev.Device) func() {
		target := filepath.Join(e.root, "dev-bind")
		must(t, os.WriteFile(target, nil, 0o600))
		must(t, unix.Mount(d.Path, target, "", unix.MS_BIND, ""))
		return func() { must(t, unix.Unmount(target, 0)) }
	}},
	{name: "the earlier driver's device node at kubelet's publish path", want: "a device node of", make: func(t *testing.T, e *loopEnv, v *volume, d loopdev.Device) func() {
		return mknodAt(t, filepath.Join(e.cfg.KubeletDir, "plugins", "kubernetes.io", "csi", "volumeDevices", "publish", v.id, "pod-1"), d)
	}},
	{name: "a device node in a pod's volumeDevices", want: "a device node of", make: func(t *testing.T, e *loopEnv, v *volume, d loopdev.Device) func() {
		return mknodAt(t, filepath.Join(e.cfg.KubeletDir, "pods", "uid-1", "volumeDevices", "kubernetes.io~csi", v.id), d)
	}},
	{name: "kubelet's loop device lock on a node of it", want: "is backed by", make: func(t *testing.T, e *loopEnv, v *volume, d loopdev.Device) func() {
		node := filepath.Join(e.root, "lock-node")
		removeNode := mknodAt(t, node, d)
		lock, err := loopdev.Attach(nodeCtx(t), node, true)
		must(t, err)
		return func() { must(t, lock.Detach()); removeNode() }
	}},
	{name: "a VM process holding it open", want: "(sleep) has", make: func(t *testing.T, e *loopEnv, v *volume, d loopdev.Device) func() {
		f, err := os.Open(d.Path)
		must(t, err)
		defer f.Close()
		cmd := exec.Command("sleep", "300")
		cmd.ExtraFiles = []*os.File{f}
		must(t, cmd.Start())
		return func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }
	}},
}

// TestNodeUnstageRefusesWhileInUse: unstage never disconnects a disk that anything uses,
// and does once the use is gone.
func TestNodeUnstageRefusesWhileInUse(t *testing.T) {
	for _, ev := range inUseEvidences {
		t.Run(ev.name, func(t *testing.T) {
			e := newLoopEnv(t)
			v := e.createVolume("unstage-used", "64M", blockCap(rwoMode))
			must(t, e.stage(v))
			remove := ev.make(t, e, v, attachedDevices(t, v)[0])
			nodeWantCode(t, e.unstage(v), codes.FailedPrecondition, ev.want)
			if len(attachedDevices(t, v)) != 1 {
				t.Fatal("the refused unstage disconnected the volume")
			}
			remove()
			must(t, e.unstage(v))
			if len(attachedDevices(t, v)) != 0 {
				t.Fatal("unstage left the unused volume connected")
			}
		})
	}
}

// TestNodeSweepKeepsWhatIsInUse: the sweep never disconnects an abandoned connection of
// its own while anything uses the disk, and does once the use is gone.
func TestNodeSweepKeepsWhatIsInUse(t *testing.T) {
	for _, ev := range inUseEvidences {
		t.Run(ev.name, func(t *testing.T) {
			e := newLoopEnv(t)
			v := e.createVolume("sweep-used", "64M", blockCap(rwoMode))
			connectOwned(t, e, v) // a crash between connect and record
			remove := ev.make(t, e, v, attachedDevices(t, v)[0])
			e.n.sweep(nodeCtx(t))
			if len(attachedDevices(t, v)) != 1 {
				t.Fatal("the sweep disconnected a disk in use")
			}
			remove()
			e.n.sweep(nodeCtx(t))
			if len(attachedDevices(t, v)) != 0 {
				t.Fatal("the sweep left this driver's abandoned, unused connection")
			}
		})
	}
}

// connectOwned connects v through the node's attacher (intent record first), as a stage
// killed before its staging record would have.
func connectOwned(t *testing.T, e *loopEnv, v *volume) {
	t.Helper()
	if _, err := e.n.att.Connect(nodeCtx(t), nvme.Target{Address: "127.0.0.1", NQN: v.nqn}, nvme.Options{}); err != nil {
		t.Fatal(err)
	}
}

// connectForeign connects v behind the driver's back, as the earlier driver (nvme-cli)
// did: no intent record.
func connectForeign(t *testing.T, e *loopEnv, v *volume) *nvme.Disk {
	t.Helper()
	d, err := e.n.att.(*owningAttacher).attacher.Connect(nodeCtx(t), nvme.Target{Address: "127.0.0.1", NQN: v.nqn}, nvme.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return d
}
