package main

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"srvlab.io/rds-csi/nvme"
)

// cadenceAttacher is an attacher whose lost volumes reconnect only once the test lets
// them; it notes when (on the fake clock) each NQN was looked at and reconnected.
type cadenceAttacher struct {
	attacher // unused methods panic
	clock    *fakeClock
	start    time.Time

	mu        sync.Mutex
	connected map[string]bool
	reachable bool
	resolves  map[string][]time.Duration
	connects  map[string][]time.Duration
}

func (a *cadenceAttacher) at() time.Duration { return a.clock.now().Sub(a.start) }

func (a *cadenceAttacher) Health(nqn string) (nvme.Health, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	c := a.connected[nqn]
	return nvme.Health{Live: c, Connected: c}, nil
}

func (a *cadenceAttacher) Resolve(nqn string, nsid int) (*nvme.Disk, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.resolves[nqn] = append(a.resolves[nqn], a.at())
	if !a.connected[nqn] {
		return nil, nvme.ErrNotConnected
	}
	return &nvme.Disk{Name: "nvme9n1", DevPath: "/dev/nvme9n1", Major: 259, Minor: 9, NQN: nqn, NSID: 1}, nil
}

func (a *cadenceAttacher) Connect(_ context.Context, t nvme.Target, _ nvme.Options) (*nvme.Disk, error) {
	a.mu.Lock()
	a.connects[t.NQN] = append(a.connects[t.NQN], a.at())
	if !a.reachable {
		a.mu.Unlock()
		return nil, errors.New("connection refused")
	}
	a.connected[t.NQN] = true
	a.mu.Unlock()
	return a.Resolve(t.NQN, t.NSID)
}

// TestWatchRetriesLostVolumeOnReconnectDelay: with a 5 s heal interval, a published
// volume whose controller was lost is retried every reconnectDelay (2 s) while its target
// is away, and healed at the first retry after it returns; a healthy volume beside it is
// looked at only every heal interval, and once healed the lost one is too.
func TestWatchRetriesLostVolumeOnReconnectDelay(t *testing.T) {
	clock := &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	att := &cadenceAttacher{clock: clock, start: clock.now(), connected: map[string]bool{testPrefix + "healthy": true},
		resolves: map[string][]time.Duration{}, connects: map[string][]time.Duration{}}
	cfg := &Config{NodeID: "node-1", ManagedNQNPrefix: testPrefix, StateDir: t.TempDir(), HealInterval: 5 * time.Second, MountStormLimit: 100}
	n, err := newNodeServiceWith(cfg, testLogger(t), newMetrics(), testGuard(t), att)
	if err != nil {
		t.Fatal(err)
	}
	n.now = clock.now
	waits := make(chan time.Duration)
	fire := make(chan time.Time)
	n.after = func(d time.Duration) <-chan time.Time {
		waits <- d
		return fire
	}
	delay := 2
	for _, id := range []string{"lost", "healthy"} {
		rec := stagingRecord{Version: stagingRecordVersion, VolumeID: "pvc-" + id, NQN: testPrefix + id, NSID: 1,
			Address: "10.0.0.1", Port: 4420, Block: true, StagingPath: "/staging/" + id, BootID: n.bootID,
			Major: 259, Minor: 9, Published: map[string]bool{t.TempDir() + "/missing-node": false}}
		rec.Options.ReconnectDelay = &delay
		if err := n.records.put(rec); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() { defer close(stopped); n.watch(ctx) }()
	defer func() { cancel(); <-stopped }()

	// step waits for the watcher to arm its timer, moves the clock on by that much
	// (to fake time until at most) and fires it; it returns the wait asked for.
	step := func() time.Duration {
		d := <-waits
		clock.add(d)
		fire <- clock.now()
		return d
	}
	for att.at() < 9*time.Second {
		if d := step(); d != 2*time.Second && d != time.Second {
			t.Fatalf("at %v the watcher waits %v; want the lost volume's reconnectDelay cadence", att.at(), d)
		}
	}
	att.mu.Lock()
	att.reachable = true
	att.mu.Unlock()
	for att.at() < 20*time.Second {
		step()
	}
	<-waits // the pass at 20 s is done
	att.mu.Lock()
	defer att.mu.Unlock()
	if got, want := att.connects[testPrefix+"lost"], secs(0, 2, 4, 6, 8, 10); !slices.Equal(got, want) {
		t.Errorf("reconnect attempts at %v, want %v (every reconnectDelay until the target is back)", got, want)
	}
	// The healthy volume is resolved once per heal interval only.
	if got, want := att.resolves[testPrefix+"healthy"], secs(0, 5, 10, 15, 20); !slices.Equal(got, want) {
		t.Errorf("healthy volume looked at %v, want %v (the heal interval)", got, want)
	}
	if got := att.connects[testPrefix+"healthy"]; len(got) != 0 {
		t.Errorf("healthy volume reconnected at %v", got)
	}
	if o, ok := n.heals.Load("pvc-lost"); !ok || o.(healOutcome).err != nil {
		t.Errorf("last heal outcome of the lost volume: %+v, want a success", o)
	}
}

func secs(s ...int) []time.Duration {
	out := make([]time.Duration, len(s))
	for i, v := range s {
		out[i] = time.Duration(v) * time.Second
	}
	return out
}
