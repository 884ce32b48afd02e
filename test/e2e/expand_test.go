//go:build e2e

package e2e

import (
	"path/filepath"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"

	"srvlab.io/rds-csi/internal/vmsys"
)

// expandOnline grows a published volume (ControllerExpandVolume, then NodeExpandVolume as
// kubelet calls it) and checks what a user sees: df (or the device size) shows the new
// size, the data is intact, and the volume stays writable.
func (e *env) expandOnline(t *testing.T, c *csi.VolumeCapability) {
	size := sizeFor(c)
	want := 2 * size
	v := e.createVolume(t, size, c, nil)
	a := e.attach(t, e.node1, v)
	a.publish(t)
	data := pattern(v.GetVolumeId(), int(mib))
	var before int64
	if isBlock(c) {
		writeDevice(t, a.target, 0, data)
		before = blockDeviceBytes(t, a.target)
	} else {
		writeSync(t, filepath.Join(a.target, "data.bin"), data)
		before = statfsBytes(t, a.target)
	}

	ctx, cancel := rpcContext()
	defer cancel()
	cr, err := e.node1.ctrl.ControllerExpandVolume(ctx, &csi.ControllerExpandVolumeRequest{
		VolumeId: v.GetVolumeId(), CapacityRange: &csi.CapacityRange{RequiredBytes: want}, VolumeCapability: c,
	})
	if err != nil {
		t.Fatalf("ControllerExpandVolume to %d: %v", want, err)
	}
	if cr.GetCapacityBytes() != want || !cr.GetNodeExpansionRequired() {
		t.Fatalf("ControllerExpandVolume = %d bytes, node expansion required %v; want %d, true", cr.GetCapacityBytes(), cr.GetNodeExpansionRequired(), want)
	}
	nr, err := a.d.node.NodeExpandVolume(ctx, &csi.NodeExpandVolumeRequest{
		VolumeId: v.GetVolumeId(), VolumePath: a.target, StagingTargetPath: a.staging,
		CapacityRange: &csi.CapacityRange{RequiredBytes: want}, VolumeCapability: c,
	})
	if err != nil {
		t.Fatalf("NodeExpandVolume to %d: %v", want, err)
	}
	if nr.GetCapacityBytes() != want {
		t.Errorf("NodeExpandVolume reports %d bytes, want %d", nr.GetCapacityBytes(), want)
	}
	name, _, ok := vmsys.LiveDisk(v.nqn)
	if !ok {
		t.Fatalf("no live disk of %s after expansion", v.nqn)
	}
	if got := diskBytes(name); got != want {
		t.Fatalf("disk %s is %d bytes after expansion, want %d", name, got, want)
	}
	if isBlock(c) {
		if got := blockDeviceBytes(t, a.target); got != want {
			t.Fatalf("the published device is %d bytes, want %d (was %d)", got, want, before)
		}
		checkDevice(t, a.target, 0, data)
		writeDevice(t, a.target, want-int64(len(data)), data) // the new space is usable
		checkDevice(t, a.target, want-int64(len(data)), data)
	} else {
		after := statfsBytes(t, a.target)
		// The filesystem keeps its metadata overhead; what it gained must be nearly all
		// of what the device gained.
		if after-before < (want-size)*9/10 {
			t.Fatalf("df of the published volume: %d bytes, was %d: it did not grow with the device (%d → %d)", after, before, size, want)
		}
		checkFile(t, filepath.Join(a.target, "data.bin"), data)
		writeSync(t, filepath.Join(a.target, "after-expansion.bin"), pattern("after", 4*int(mib)))
		oneMount(t, a.staging)
		if total := bytesTotal(a.stats(t)); total != after {
			t.Errorf("NodeGetVolumeStats total %d bytes, statfs says %d", total, after)
		}
	}
	t.Logf("%s grew from %d to %d bytes while published", kind(c), before, want)
	a.detach(t)
	e.deleteVolume(t, v)
}

// bytesTotal is the BYTES usage's total from a NodeGetVolumeStats reply.
func bytesTotal(r *csi.NodeGetVolumeStatsResponse) int64 {
	for _, u := range r.GetUsage() {
		if u.GetUnit() == csi.VolumeUsage_BYTES {
			return u.GetTotal()
		}
	}
	return -1
}
