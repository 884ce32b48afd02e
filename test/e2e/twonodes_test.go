//go:build e2e

package e2e

import (
	"path/filepath"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"

	"srvlab.io/rds-csi/internal/vmsys"
)

// sizeFor is the suite's volume size for a capability: small, but xfs's minimum for xfs.
func sizeFor(c *csi.VolumeCapability) int64 {
	if kind(c) == "xfs" {
		return 300 * mib
	}
	return 64 * mib
}

// extraNode starts another node plugin (its own socket, host identity and state) for the
// test and stops it gracefully at the test's end. Only one node plugin sweeps the kernel
// at a time in this suite: node 1 holds no volume while another node starts.
func (e *env) extraNode(t *testing.T, nodeID string) *driver {
	t.Helper()
	var d *driver
	for _, x := range e.drivers {
		if x.nodeID == nodeID {
			d = x
		}
	}
	if d == nil {
		d = e.newDriver(nodeID, "node")
	}
	d.start(t)
	t.Cleanup(func() {
		if d.running() {
			d.stop(t)
		}
	})
	return d
}

// twoNodes: create, stage and publish on node 1, write, unpublish, unstage; stage and
// publish on node 2 (another host identity), read the same data back; delete.
func (e *env) twoNodes(t *testing.T, c *csi.VolumeCapability) {
	v := e.createVolume(t, sizeFor(c), c, nil)
	data := pattern(v.GetVolumeId(), 3*int(mib)+4321)
	tail := pattern(v.GetVolumeId()+"/tail", 4096)
	tailAt := v.GetCapacityBytes() - int64(len(tail)) // the last block: the whole device is there

	a := e.attach(t, e.node1, v)
	a.publish(t)
	var uuid string
	if isBlock(c) {
		writeDevice(t, a.target, 0, data)
		writeDevice(t, a.target, tailAt, tail)
	} else {
		uuid = fsUUID(t, devPathOf(t, a.stagedDevice(t)))
		writeSync(t, filepath.Join(a.target, "data.bin"), data)
	}
	first := a.d.identity(t)
	requireConnectedAs(t, v.nqn, first)
	a.detach(t)

	n2 := e.extraNode(t, "e2e-node-2")
	second := n2.identity(t)
	if second.HostNQN == first.HostNQN || second.HostID == first.HostID {
		t.Fatalf("node 2 has node 1's host identity: %+v vs %+v", second, first)
	}
	b := e.attach(t, n2, v)
	b.publish(t)
	requireConnectedAs(t, v.nqn, second)
	if isBlock(c) {
		checkDevice(t, b.target, 0, data)
		checkDevice(t, b.target, tailAt, tail)
	} else {
		checkFile(t, filepath.Join(b.target, "data.bin"), data)
		if got := fsUUID(t, devPathOf(t, b.stagedDevice(t))); got != uuid {
			t.Fatalf("filesystem UUID on node 2 is %s, was %s on node 1: formatted again", got, uuid)
		}
	}
	b.detach(t)
	e.deleteVolume(t, v)
}

// requireConnectedAs requires every host controller of nqn to be live and to have
// connected with the given host identity.
func requireConnectedAs(t *testing.T, nqn string, id hostIdentity) {
	t.Helper()
	ctrls := vmsys.ControllersOf(nqn)
	if len(ctrls) == 0 {
		t.Fatalf("no controller of %s", nqn)
	}
	for _, c := range ctrls {
		if hostID := vmsys.Attr("/sys/class/nvme/" + c.Name + "/hostid"); c.HostNQN != id.HostNQN || hostID != id.HostID || c.State != "live" {
			t.Fatalf("controller %s of %s: host %s/%s, state %s; want %s/%s, live", c.Name, nqn, c.HostNQN, hostID, c.State, id.HostNQN, id.HostID)
		}
	}
}
