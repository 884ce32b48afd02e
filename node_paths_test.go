package main

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	dto "github.com/prometheus/client_model/go"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"

	"srvlab.io/rds-csi/nvme"
)

// pathsAttacher is a kernel with one subsystem per NQN and one controller per path: an
// address connects when it is reachable, and the test sets each controller's state.
type pathsAttacher struct {
	attacher  // unused methods panic
	multipath bool

	mu       sync.Mutex
	refused  map[string]bool              // addresses that answer ECONNREFUSED
	ctrls    map[string][]nvme.Controller // NQN → controllers
	connects []nvme.Target
	nextCtrl int
	lastOpts []nvme.Options
	multiErr error
}

func newPathsAttacher(multipath bool) *pathsAttacher {
	return &pathsAttacher{multipath: multipath, refused: map[string]bool{}, ctrls: map[string][]nvme.Controller{}}
}

func (a *pathsAttacher) Multipath() (bool, error) { return a.multipath, a.multiErr }

func (a *pathsAttacher) Health(nqn string) (nvme.Health, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	h := nvme.Health{Controllers: slices.Clone(a.ctrls[nqn]), Connected: len(a.ctrls[nqn]) > 0}
	for _, c := range h.Controllers {
		h.Live = h.Live || c.Live()
	}
	return h, nil
}

func (a *pathsAttacher) Resolve(nqn string, nsid int) (*nvme.Disk, error) {
	h, _ := a.Health(nqn)
	if !h.Connected {
		return nil, fmt.Errorf("%w: %s", nvme.ErrNotConnected, nqn)
	}
	return &nvme.Disk{Name: "nvme1n1", DevPath: "/dev/nvme1n1", Major: 259, Minor: 1, NQN: nqn, NSID: nsid, Controllers: h.Controllers}, nil
}

func (a *pathsAttacher) Connect(_ context.Context, t nvme.Target, o nvme.Options) (*nvme.Disk, error) {
	a.mu.Lock()
	a.connects = append(a.connects, t)
	a.lastOpts = append(a.lastOpts, o)
	if a.refused[t.Address] {
		a.mu.Unlock()
		return nil, fmt.Errorf("%w: nothing listens on %s:%d (ECONNREFUSED)", nvme.ErrUnreachable, t.Address, t.Port)
	}
	exists := slices.ContainsFunc(a.ctrls[t.NQN], func(c nvme.Controller) bool { return c.TrAddr == t.Address && c.TrSvcID == t.Port })
	if !exists {
		a.nextCtrl++
		a.ctrls[t.NQN] = append(a.ctrls[t.NQN], nvme.Controller{Name: fmt.Sprintf("nvme%d", a.nextCtrl), State: "live", Transport: "tcp",
			TrAddr: t.Address, TrSvcID: t.Port})
	}
	a.mu.Unlock()
	return a.Resolve(t.NQN, t.NSID)
}

// setState sets the state of nqn's controller on address ("" removes it).
func (a *pathsAttacher) setState(nqn, address, state string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	cs := a.ctrls[nqn]
	for i := range cs {
		if cs[i].TrAddr == address {
			if state == "" {
				a.ctrls[nqn] = slices.Delete(cs, i, i+1)
				return
			}
			cs[i].State = state
		}
	}
}

func (a *pathsAttacher) connectedTo() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []string
	for _, t := range a.connects {
		out = append(out, t.Address)
	}
	a.connects = nil
	return out
}

const (
	pathA = "10.0.0.10"
	pathB = "10.0.1.10"
)

func pathsNode(t *testing.T, att attacher) *nodeService {
	t.Helper()
	cfg := &Config{NodeID: "node-1", ManagedNQNPrefix: testPrefix, StateDir: t.TempDir(), HealInterval: 1e9, MountStormLimit: 100}
	n, err := newNodeServiceWith(cfg, testLogger(t), newMetrics(), testGuard(t), att)
	must(t, err)
	return n
}

func stageTwoPaths(t *testing.T, n *nodeService, id string) error {
	t.Helper()
	_, err := n.NodeStageVolume(nodeCtx(t), &csi.NodeStageVolumeRequest{VolumeId: id, StagingTargetPath: n.cfg.StateDir + "/staging-" + id, VolumeCapability: blockCap(rwoMode),
		VolumeContext: map[string]string{contextNQN: testPrefix + id, paramNVMeAddress: pathA, paramNVMeAddresses: pathA + "," + pathB, paramCtrlLossTmo: "30"}})
	return err
}

// healthOf returns the volume's health entries as "STATUS Reason: message" lines.
func healthOf(t *testing.T, n *nodeService, id string) []string {
	t.Helper()
	r, err := n.NodeGetVolumeHealth(nodeCtx(t), &csi.NodeGetVolumeHealthRequest{VolumeId: id})
	must(t, err)
	var out []string
	for _, e := range r.GetVolumeHealth().GetHealthStatuses() {
		out = append(out, fmt.Sprintf("%s %s: %s", e.GetStatus(), e.GetReason(), e.GetMessage()))
	}
	return out
}

func wantHealth(t *testing.T, got []string, want ...string) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("volume health %q, want %d entries like %q", got, len(want), want)
	}
	for i := range want {
		if !strings.Contains(got[i], want[i]) {
			t.Fatalf("volume health entry %q lacks %q", got[i], want[i])
		}
	}
}

func TestNodeStageMultipath(t *testing.T) {
	t.Run("one controller per path, same options", func(t *testing.T) {
		att := newPathsAttacher(true)
		n := pathsNode(t, att)
		must(t, stageTwoPaths(t, n, "pvc-mp"))
		if got := att.connectedTo(); !slices.Equal(got, []string{pathA, pathB}) {
			t.Fatalf("connected %v, want one connect per path", got)
		}
		if o := att.lastOpts; len(o) != 2 || *o[0].CtrlLossTmo != 30 || *o[1].CtrlLossTmo != 30 {
			t.Fatalf("options %+v: both paths want the volume's options", o)
		}
		rec, _ := n.records.get("pvc-mp")
		if !slices.Equal(rec.Addresses, []string{pathA, pathB}) || rec.SinglePath || rec.Address != pathA {
			t.Fatalf("record addresses %v single %v address %s", rec.Addresses, rec.SinglePath, rec.Address)
		}
		wantHealth(t, healthOf(t, n, "pvc-mp"))
	})
	t.Run("a refused path does not fail the volume and is named", func(t *testing.T) {
		att := newPathsAttacher(true)
		att.refused[pathB] = true
		n := pathsNode(t, att)
		must(t, stageTwoPaths(t, n, "pvc-mp"))
		wantHealth(t, healthOf(t, n, "pvc-mp"), "DEGRADED PathDegraded: degraded: 1 of 2 paths live (10.0.1.10 not connected: NVMe/TCP target unreachable: nothing listens on 10.0.1.10:4420 (ECONNREFUSED))")
	})
	t.Run("no path connects", func(t *testing.T) {
		att := newPathsAttacher(true)
		att.refused[pathA], att.refused[pathB] = true, true
		n := pathsNode(t, att)
		wantCode(t, stageTwoPaths(t, n, "pvc-mp"), codes.Unavailable, "no NVMe/TCP path of volume pvc-mp connected", "path 10.0.0.10:4420", "path 10.0.1.10:4420", "ECONNREFUSED")
	})
	t.Run("native multipath off: one path, and the condition says so", func(t *testing.T) {
		att := newPathsAttacher(false)
		n := pathsNode(t, att)
		must(t, stageTwoPaths(t, n, "pvc-mp"))
		if got := att.connectedTo(); !slices.Equal(got, []string{pathA}) {
			t.Fatalf("connected %v, want the first path only", got)
		}
		wantHealth(t, healthOf(t, n, "pvc-mp"), "DEGRADED MultipathOff: native NVMe multipath is off on this node (nvme_core.multipath=N), so the volume uses one of its 2 paths (10.0.0.10)")
		// A restage keeps to the path in use.
		must(t, stageTwoPaths(t, n, "pvc-mp"))
		if got := att.connectedTo(); !slices.Equal(got, []string{pathA}) {
			t.Fatalf("restage connected %v, want the path in use only", got)
		}
	})
	t.Run("native multipath off, first path refused: the second is used", func(t *testing.T) {
		att := newPathsAttacher(false)
		att.refused[pathA] = true
		n := pathsNode(t, att)
		must(t, stageTwoPaths(t, n, "pvc-mp"))
		if got := att.connectedTo(); !slices.Equal(got, []string{pathA, pathB}) {
			t.Fatalf("connected %v, want the first, then the second", got)
		}
		rec, _ := n.records.get("pvc-mp")
		if rec.Address != pathB || !rec.SinglePath {
			t.Fatalf("record uses %s (single %v), want %s", rec.Address, rec.SinglePath, pathB)
		}
		att.refused[pathA] = false
		must(t, stageTwoPaths(t, n, "pvc-mp"))
		if got := att.connectedTo(); !slices.Equal(got, []string{pathB}) {
			t.Fatalf("restage with both reachable connected %v: a second disk of the volume must never appear", got)
		}
	})
	t.Run("multipath state unreadable: one path", func(t *testing.T) {
		att := newPathsAttacher(true)
		att.multiErr = unix.EACCES
		n := pathsNode(t, att)
		must(t, stageTwoPaths(t, n, "pvc-mp"))
		if got := att.connectedTo(); !slices.Equal(got, []string{pathA}) {
			t.Fatalf("connected %v, want one path", got)
		}
	})
}

func TestNodeMultipathCondition(t *testing.T) {
	nqn := testPrefix + "pvc-mp"
	for _, tc := range []struct {
		name   string
		states [2]string // path A, path B ("" = no controller)
		want   []string
	}{
		{"all live", [2]string{"live", "live"}, nil},
		{"path 2 reconnecting", [2]string{"live", "connecting"}, []string{"DEGRADED PathDegraded: degraded: 1 of 2 paths live (10.0.1.10 reconnecting)"}},
		{"path 1 resetting", [2]string{"resetting", "live"}, []string{"DEGRADED PathDegraded: degraded: 1 of 2 paths live (10.0.0.10 reconnecting)"}},
		{"path 2 given up", [2]string{"live", ""}, []string{"DEGRADED PathDegraded: degraded: 1 of 2 paths live (10.0.1.10 not connected)"}},
		{"none live", [2]string{"connecting", "connecting"}, []string{"INACCESSIBLE NoLivePath: no live NVMe/TCP path to " + nqn + " (10.0.0.10 reconnecting, 10.0.1.10 reconnecting)"}},
		{"none left", [2]string{"", ""}, []string{"INACCESSIBLE ControllerLost"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			att := newPathsAttacher(true)
			n := pathsNode(t, att)
			must(t, stageTwoPaths(t, n, "pvc-mp"))
			att.setState(nqn, pathA, tc.states[0])
			att.setState(nqn, pathB, tc.states[1])
			wantHealth(t, healthOf(t, n, "pvc-mp"), tc.want...)
		})
	}
}

// TestWatchReconnectsAGivenUpPath: the kernel removed path 2's controller while path 1
// stays live; the watcher connects path 2 again (and nothing else) once it answers,
// trying a path that keeps failing ever more rarely (each try holds the volume lock), and
// the paths gauge follows.
func TestWatchReconnectsAGivenUpPath(t *testing.T) {
	nqn := testPrefix + "pvc-mp"
	att := newPathsAttacher(true)
	n := pathsNode(t, att)
	clock := &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	n.now = clock.now
	must(t, stageTwoPaths(t, n, "pvc-mp"))
	att.connectedTo()
	gauge := func(state string) float64 {
		var m dto.Metric
		must(t, n.m.volumePaths.WithLabelValues("pvc-mp", state).Write(&m))
		return m.GetGauge().GetValue()
	}

	att.setState(nqn, pathB, "")
	att.refused[pathB] = true
	retry := map[string]time.Time{}
	n.healPass(nodeCtx(t), func(string) bool { return true }, retry)
	if got := att.connectedTo(); !slices.Equal(got, []string{pathB}) {
		t.Fatalf("the watcher connected %v, want path 2 only", got)
	}
	if _, ok := retry["pvc-mp"]; !ok {
		t.Fatal("a volume with a path down is not looked at again on its retry cadence")
	}
	if gauge("configured") != 2 || gauge("live") != 1 {
		t.Fatalf("paths gauge configured %v live %v, want 2 and 1", gauge("configured"), gauge("live"))
	}
	wantHealth(t, healthOf(t, n, "pvc-mp"), "degraded: 1 of 2 paths live (10.0.1.10 not connected: NVMe/TCP target unreachable")

	pass := func(after time.Duration) []string {
		clock.add(after)
		n.healPass(nodeCtx(t), func(string) bool { return true }, retry)
		return att.connectedTo()
	}
	// reconnectDelay is 5 s (the default): tries at 5 s, then 10 s and 20 s later.
	for _, step := range []struct {
		after time.Duration
		want  []string
	}{{time.Second, nil}, {4 * time.Second, []string{pathB}}, {9 * time.Second, nil}, {time.Second, []string{pathB}}, {19 * time.Second, nil}} {
		if got := pass(step.after); !slices.Equal(got, step.want) {
			t.Fatalf("%v later the watcher connected %v, want %v", step.after, got, step.want)
		}
	}
	att.refused[pathB] = false
	clock.add(time.Second)
	n.healPass(nodeCtx(t), func(string) bool { return true }, retry)
	if got := att.connectedTo(); !slices.Equal(got, []string{pathB}) {
		t.Fatalf("the watcher connected %v, want path 2 only", got)
	}
	if _, ok := retry["pvc-mp"]; ok {
		t.Fatal("the volume is healthy again but still on the retry cadence")
	}
	if gauge("live") != 2 {
		t.Fatalf("live paths %v, want 2", gauge("live"))
	}
	wantHealth(t, healthOf(t, n, "pvc-mp"))
	if h, _ := n.heals.Load("pvc-mp"); h != nil {
		t.Fatalf("a path reconnect was recorded as a heal of the volume: %+v", h)
	}
}
