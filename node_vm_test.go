//go:build vmtest

// The node service over real NVMe/TCP: these tests run only inside the test VM
// (test/vm/run-node-tests.sh), where the kernel's nvmet target exports file-backed
// namespaces on 127.0.0.1 and the node connects to them through /dev/nvme-fabrics.

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
	"golang.org/x/sys/unix"

	"srvlab.io/rds-csi/internal/vmsys"
	"srvlab.io/rds-csi/mount"
)

// vmNode is a node service with the real NVMe host, and kubelet-like paths.
type vmNode struct {
	n    *nodeService
	root string
	// checkVar proves the unmanaged /var subsystem untouched (node_vm_multipath_test.go).
	checkVar func(t *testing.T)
}

func TestNodeVM(t *testing.T) {
	vm := newVMNode(t)
	t.Run("block cycle", vm.blockCycle)
	t.Run("heal after ctrl_loss", vm.healAfterCtrlLoss)
	t.Run("online ext4 expansion", vm.onlineExt4Expansion)
	t.Run("multipath failover with a writer", vm.multipathFailover)
	t.Run("multipath path lost to ctrl_loss_tmo, reconnected by the watcher", vm.multipathPathLost)
}

// newVMNode starts a node service on the real NVMe host of the VM.
func newVMNode(t *testing.T) *vmNode {
	t.Helper()
	if os.Getenv("RDS_CSI_VM") != "1" {
		t.Fatal("the vmtest tests run only inside the test VM: use test/vm/run-node-tests.sh")
	}
	if _, err := os.Stat("/dev/nvme-fabrics"); err != nil {
		t.Fatalf("no /dev/nvme-fabrics in the VM: %v", err)
	}
	root := t.TempDir()
	cfg := &Config{
		NodeID: "vm-node", ManagedNQNPrefix: testPrefix, StateDir: filepath.Join(root, "state"),
		NVMeHostDir: filepath.Join(root, "etc-nvme"), SysfsRoot: "/sys", DevRoot: "/dev", ProcRoot: "/proc",
		HealInterval: 200 * time.Millisecond, MountStormLimit: 100,
	}
	m := newMetrics()
	att, err := newNVMeAttacher(cfg, testGuard(t), testLogger(t), m)
	must(t, err)
	n, err := newNodeServiceWith(cfg, testLogger(t), m, testGuard(t), att)
	must(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	go n.run(ctx)
	t.Cleanup(func() { cancel(); n.close() })
	return &vmNode{n: n, root: root}
}

// blockCycle: a raw block volume is published as a device node of the NVMe disk and
// unstaging disconnects it.
func (vm *vmNode) blockCycle(t *testing.T) {
	v := vm.export(t, "vmblock", "32M", 1)
	v.cap = blockCap(rwoMode)
	must(t, vm.stage(t, v))
	target := vm.target(t, "blk")
	must(t, vm.publish(t, v, target))
	var st unix.Stat_t
	must(t, unix.Lstat(target, &st))
	d, err := vm.n.att.Resolve(v.nqn, 1)
	must(t, err)
	if st.Mode&unix.S_IFMT != unix.S_IFBLK || unix.Major(st.Rdev) != d.Major || unix.Minor(st.Rdev) != d.Minor {
		t.Fatalf("%s is not a node for %s (%d:%d)", target, d.DevPath, d.Major, d.Minor)
	}
	data := pattern("vm-block", 1<<20)
	writeSync(t, target, data, 0)
	checkData(t, target, data, 0)
	must(t, vm.unpublish(t, v, target))
	must(t, vm.unstage(t, v))
	if c := vmsys.ControllerNames(v.nqn); len(c) != 0 {
		t.Fatalf("controllers left after unstage: %v", c)
	}
}

// healAfterCtrlLoss: the target stays down past ctrl_loss_tmo (the kernel gives the
// controller up and the disk vanishes under the mounts), then comes back with new names;
// the watcher reconnects and replaces the staging and publish mounts, data intact.
func (vm *vmNode) healAfterCtrlLoss(t *testing.T) {
	v := vm.export(t, "vmheal", "128M", 2) // nvmet port 2 (4421): its outage touches no other test
	v.vc[paramNVMePort] = "4421"
	v.vc[paramCtrlLossTmo] = "2"
	v.vc[paramReconnectDelay] = "1"
	must(t, vm.stage(t, v))
	target := vm.target(t, "app")
	must(t, vm.publish(t, v, target))
	before := pattern("vm-before", 2<<20)
	writeSync(t, filepath.Join(target, "before.bin"), before, 0)
	old := mountsAt(t, v.staging)[0]

	vmShell(t, "nvmet-port-down", "2")
	down := time.Now()
	if !nodeWaitFor(30*time.Second, func() bool { return len(vmsys.ControllerNames(v.nqn)) == 0 }) {
		vmShell(t, "nvmet-port-up", "2")
		t.Fatalf("the kernel kept the controller 30s after the target went away with ctrl_loss_tmo=2: %v", vmsys.ControllerNames(v.nqn))
	}
	t.Logf("controller lost %v after the target went away", time.Since(down).Round(time.Millisecond))
	vmShell(t, "nvmet-port-up", "2")
	up := time.Now()
	if !nodeWaitFor(45*time.Second, func() bool {
		s := mountsAt(t, v.staging)
		return len(s) == 1 && (s[0].Major != old.Major || s[0].Minor != old.Minor) && onlyMount(t, target, s[0])
	}) {
		t.Fatalf("not healed 45s after the target came back: staging %+v, target %+v (was %d:%d)", mountsAt(t, v.staging), mountsAt(t, target), old.Major, old.Minor)
	}
	now := mountsAt(t, v.staging)[0]
	t.Logf("healed %v after the target came back: %d:%d → %d:%d", time.Since(up).Round(time.Millisecond), old.Major, old.Minor, now.Major, now.Minor)
	checkData(t, filepath.Join(target, "before.bin"), before, 0)
	after := pattern("vm-after", 1<<20)
	writeSync(t, filepath.Join(target, "after.bin"), after, 0)
	if !nodeWaitFor(10*time.Second, func() bool { return len(vm.health(t, v)) == 0 }) {
		t.Fatalf("volume health after healing: %v", vm.health(t, v))
	}
	must(t, vm.unpublish(t, v, target))
	must(t, vm.unstage(t, v))
	must(t, vm.stage(t, v))
	target = vm.target(t, "check")
	must(t, vm.publish(t, v, target))
	checkData(t, filepath.Join(target, "before.bin"), before, 0)
	checkData(t, filepath.Join(target, "after.bin"), after, 0)
	must(t, vm.unpublish(t, v, target))
	must(t, vm.unstage(t, v))
}

// onlineExt4Expansion: the target's backing file grows and nvmet revalidates the
// namespace; NodeExpandVolume rescans and grows the mounted ext4 filesystem.
func (vm *vmNode) onlineExt4Expansion(t *testing.T) {
	v := vm.export(t, "vmgrow", "64M", 1)
	must(t, vm.stage(t, v))
	target := vm.target(t, "grow")
	must(t, vm.publish(t, v, target))
	before, err := mount.StatContext(nodeCtx(t), target)
	must(t, err)
	must(t, os.Truncate(vmBacking(v.nqn), 128<<20))
	must(t, os.WriteFile(fmt.Sprintf("/sys/kernel/config/nvmet/subsystems/%s/namespaces/1/revalidate_size", v.nqn), []byte("1"), 0))
	r, err := vm.n.NodeExpandVolume(nodeCtx(t), &csi.NodeExpandVolumeRequest{VolumeId: v.id, VolumePath: target, StagingTargetPath: v.staging,
		VolumeCapability: v.cap, CapacityRange: &csi.CapacityRange{RequiredBytes: 128 << 20}})
	must(t, err)
	after, err := mount.StatContext(nodeCtx(t), target)
	must(t, err)
	if r.GetCapacityBytes() != 128<<20 || after.TotalBytes-before.TotalBytes < 56<<20 {
		t.Fatalf("capacity %d; filesystem %d → %d bytes: want the disk at 128 MiB and the filesystem grown by ~64 MiB", r.GetCapacityBytes(), before.TotalBytes, after.TotalBytes)
	}
	writeSync(t, filepath.Join(target, "big.bin"), pattern("vm-grow", 80<<20), 0)
	must(t, vm.unpublish(t, v, target))
	must(t, vm.unstage(t, v))
}

// export makes nvmet export a file-backed namespace on nvmet port p (4419+p).
func (vm *vmNode) export(t *testing.T, name, size string, p int) *volume {
	t.Helper()
	id := "pvc-" + name
	nqn := testPrefix + name
	vmShell(t, "nvmet-export", nqn, vmBacking(nqn), size, "1", fmt.Sprint(p))
	staging := filepath.Join(vm.root, "staging", id)
	must(t, os.MkdirAll(staging, 0o750))
	return &volume{id: id, nqn: nqn, staging: staging, cap: mountCap(rwoMode, "ext4"),
		vc: map[string]string{contextNQN: nqn, paramNVMeAddress: "127.0.0.1", paramNVMePort: fmt.Sprint(4419 + p)}}
}

func vmBacking(nqn string) string { return "/srv/nvmet/" + strings.ReplaceAll(nqn, ":", "_") + ".img" }

func (vm *vmNode) target(t *testing.T, pod string) string {
	dir := filepath.Join(vm.root, "pods", pod)
	must(t, os.MkdirAll(dir, 0o750))
	return filepath.Join(dir, "vol")
}

func (vm *vmNode) stage(t *testing.T, v *volume) error {
	_, err := vm.n.NodeStageVolume(nodeCtx(t), &csi.NodeStageVolumeRequest{VolumeId: v.id, StagingTargetPath: v.staging, VolumeCapability: v.cap, VolumeContext: v.vc})
	return err
}

func (vm *vmNode) publish(t *testing.T, v *volume, target string) error {
	_, err := vm.n.NodePublishVolume(nodeCtx(t), &csi.NodePublishVolumeRequest{VolumeId: v.id, StagingTargetPath: v.staging, TargetPath: target, VolumeCapability: v.cap, VolumeContext: v.vc})
	return err
}

func (vm *vmNode) unpublish(t *testing.T, v *volume, target string) error {
	_, err := vm.n.NodeUnpublishVolume(nodeCtx(t), &csi.NodeUnpublishVolumeRequest{VolumeId: v.id, TargetPath: target})
	return err
}

func (vm *vmNode) unstage(t *testing.T, v *volume) error {
	_, err := vm.n.NodeUnstageVolume(nodeCtx(t), &csi.NodeUnstageVolumeRequest{VolumeId: v.id, StagingTargetPath: v.staging})
	return err
}

func (vm *vmNode) health(t *testing.T, v *volume) []*csi.VolumeHealth_VolumeHealthEntry {
	r, err := vm.n.NodeGetVolumeHealth(nodeCtx(t), &csi.NodeGetVolumeHealthRequest{VolumeId: v.id, StagingTargetPath: v.staging})
	must(t, err)
	return r.GetVolumeHealth().GetHealthStatuses()
}

func vmShell(t *testing.T, name string, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}
