//go:build e2e

package e2e

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"srvlab.io/rds-csi/internal/vmsys"
)

// The simulator listens on two addresses (rds-sim --nvme-address), as an RDS with a storage
// port on each network; a third answers nothing.
const (
	nvmePath2   = "127.0.0.2"
	nvmeNowhere = "127.0.0.3"
)

// pathsOf counts the controllers of nqn per target address.
func pathsOf(nqn string) map[string]int {
	out := map[string]int{}
	for _, c := range vmsys.ControllersOf(nqn) {
		if a := c.Traddr(); a != "" {
			out[a]++
		}
	}
	return out
}

// waitHealth polls the volume's health until it is what want accepts, and returns it
// as "STATUS Reason: message" lines.
func (a *attachment) waitHealth(t *testing.T, d time.Duration, what string, want func([]string) bool) []string {
	t.Helper()
	var got []string
	if waitFor(d, func() bool {
		got = got[:0]
		for _, h := range a.health(t) {
			got = append(got, fmt.Sprintf("%s %s: %s", h.GetStatus(), h.GetReason(), h.GetMessage()))
		}
		return want(got)
	}) {
		return got
	}
	t.Fatalf("volume health is not %s within %v: %q", what, d, got)
	return nil
}

func degraded(prefix string) func([]string) bool {
	return func(got []string) bool {
		return len(got) == 1 && strings.HasPrefix(got[0], "DEGRADED PathDegraded: "+prefix)
	}
}

func normal(got []string) bool { return len(got) == 0 }

// multipath: a StorageClass with nvmeAddresses gives the volume a controller per path; a
// writer keeps writing while path 1 goes down, the kernel gives the path up (finite
// ctrlLossTmo), and the node plugin connects it again by itself once it answers, with the
// disk and mounts unchanged; unstage leaves no controller of either path.
func (e *env) multipath(t *testing.T) {
	v := e.createVolume(t, 64*mib, mountCap("ext4"), map[string]string{
		"nvmeAddresses": nvmeAddress + "," + nvmePath2, "ctrlLossTmo": "3", "reconnectDelay": "1"})
	if vc := v.GetVolumeContext(); vc["nvmeAddress"] != nvmeAddress || vc["nvmeAddresses"] != nvmeAddress+","+nvmePath2 {
		t.Fatalf("volume context %v: want nvmeAddress %s and nvmeAddresses %s,%s", vc, nvmeAddress, nvmeAddress, nvmePath2)
	}
	a := e.attach(t, e.node1, v)
	a.publish(t)
	if p := pathsOf(v.nqn); p[nvmeAddress] != 1 || p[nvmePath2] != 1 {
		t.Fatalf("controllers per path after stage: %v, want one on each", p)
	}
	a.waitHealth(t, 10*time.Second, "normal", normal)
	dev := a.stagedDevice(t)
	w := startWriter(t, filepath.Join(a.target, "journal.bin"))
	if !waitFor(10*time.Second, func() bool { n, err := w.written(); return n >= 5 || err != nil }) {
		t.Fatal("the writer made no progress")
	}

	port := nvmetPortOf(t, v.nqn, nvmeAddress)
	portDown(t, port)
	before, _ := w.written()
	got := a.waitHealth(t, 15*time.Second, "degraded", degraded("degraded: 1 of 2 paths live ("+nvmeAddress+" reconnecting)"))
	t.Logf("path 1 down: %q", got)
	if !waitFor(30*time.Second, func() bool { return pathsOf(v.nqn)[nvmeAddress] == 0 }) {
		portUp(t, port)
		t.Fatalf("the kernel kept path 1's controller 30s with ctrl_loss_tmo=3: %v", pathsOf(v.nqn))
	}
	if n, err := w.written(); err != nil || n < before+20 {
		portUp(t, port)
		t.Fatalf("with path 1 down the writer went from %d to %d chunks (%v): it must keep writing on path 2", before, n, err)
	}
	portUp(t, port)
	up := time.Now()
	if !waitFor(20*time.Second, func() bool { return pathsOf(v.nqn)[nvmeAddress] == 1 }) {
		t.Fatalf("path 1 not reconnected 20s after it answered again: %v", pathsOf(v.nqn))
	}
	t.Logf("path 1 reconnected by the node plugin %v after it answered again, with no RPC", time.Since(up).Round(time.Millisecond))
	a.waitHealth(t, 10*time.Second, "normal", normal)
	expect := w.finish(t, 30*time.Second)
	for _, p := range []string{a.staging, a.target} {
		if m := oneMount(t, p); m.majmin != dev {
			t.Errorf("%s is now mounted from %s, was %s: a path failure must not change the disk", p, m.majmin, dev)
		}
	}
	checkFile(t, filepath.Join(a.target, "journal.bin"), expect)
	a.detach(t)
	e.deleteVolume(t, v)
}

// multipathRefusedPath: a path where the RDS does not listen does not fail the volume; the
// condition names it and why.
func (e *env) multipathRefusedPath(t *testing.T) {
	v := e.createVolume(t, 32*mib, blockCap(), map[string]string{"nvmeAddresses": nvmeAddress + "," + nvmeNowhere})
	a := e.attach(t, e.node1, v)
	if p := pathsOf(v.nqn); p[nvmeAddress] != 1 || len(p) != 1 {
		t.Fatalf("controllers per path: %v, want path 1 only", p)
	}
	got := a.waitHealth(t, 10*time.Second, "degraded", degraded("degraded: 1 of 2 paths live ("+nvmeNowhere+" not connected: "))
	if !strings.Contains(got[0], "ECONNREFUSED") {
		t.Fatalf("the condition does not say why the path failed: %q", got)
	}
	t.Logf("refused path: %q", got)
	a.publish(t)
	data := pattern(v.GetVolumeId(), int(mib))
	writeDevice(t, a.target, 0, data)
	checkDevice(t, a.target, 0, data)
	a.detach(t)
	e.deleteVolume(t, v)
}
