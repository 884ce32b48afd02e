//go:build e2e

package e2e

import (
	"path/filepath"
	"testing"

	"srvlab.io/rds-csi/internal/vmsys"
)

// killBetweenStageAndPublish: the node plugin dies by SIGKILL (OOM, eviction) after
// staging a volume and before publishing it, and is started again. Publish must complete
// on the filesystem staged before, which is neither formatted again nor mounted twice;
// staging again (kubelet retries) is a no-op; a graceful restart with the volume published
// leaves it attached and working.
func (e *env) killBetweenStageAndPublish(t *testing.T) {
	n := e.extraNode(t, "e2e-node-k")
	v := e.createVolume(t, 64*mib, mountCap("ext4"), nil)
	a := e.attach(t, n, v)
	dev := a.stagedDevice(t)
	uuid := fsUUID(t, devPathOf(t, dev))
	marker := pattern(v.GetVolumeId(), int(mib))
	writeSync(t, filepath.Join(a.staging, "staged-before-kill.bin"), marker)

	n.kill(t)
	if m := oneMount(t, a.staging); m.majmin != dev {
		t.Fatalf("after SIGKILL the staging mount is on %s, was %s", m.majmin, dev)
	}
	n.restart(t)
	a.publish(t)
	checkFile(t, filepath.Join(a.target, "staged-before-kill.bin"), marker)
	if m := oneMount(t, a.staging); m.majmin != dev {
		t.Fatalf("after the restart the staging mount is on %s, was %s", m.majmin, dev)
	}
	if m := oneMount(t, a.target); m.majmin != dev {
		t.Fatalf("the publish target is mounted from %s, want the staged %s", m.majmin, dev)
	}
	if got := fsUUID(t, devPathOf(t, dev)); got != uuid {
		t.Fatalf("filesystem UUID %s, was %s before the kill: formatted again", got, uuid)
	}

	a.stage(t) // kubelet may stage again after a plugin restart: a no-op
	if ms := mountsOf(t, dev); len(ms) != 2 {
		t.Fatalf("after staging again, %s has %d mounts, want 2 (staging + publish): %+v", dev, len(ms), ms)
	}

	n.stop(t)
	if len(vmsys.ControllersOf(v.nqn)) == 0 {
		t.Fatalf("a graceful stop of the node plugin disconnected %s", v.nqn)
	}
	writeSync(t, filepath.Join(a.target, "while-stopped.bin"), marker)
	n.restart(t)
	checkFile(t, filepath.Join(a.target, "staged-before-kill.bin"), marker)
	if got := fsUUID(t, devPathOf(t, dev)); got != uuid {
		t.Fatalf("filesystem UUID %s after the graceful restart, was %s", got, uuid)
	}
	a.detach(t)
	e.deleteVolume(t, v)
}
