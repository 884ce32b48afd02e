package nvme

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A diskless node boots its own /var over NVMe/TCP. Whatever the driver does, that
// subsystem (and any other outside the managed prefix) must be left exactly as it was:
// not one attribute written, not one file changed, even when it is reconnecting, unused
// and unclaimed, and even when it is asked for by name.
func TestUnmanagedSubsystemsSurviveEveryOperation(t *testing.T) {
	vol := testPrefix + "a"
	for _, state := range []string{"live", "connecting", "deleting (no IO)"} {
		t.Run(state, func(t *testing.T) {
			f := newFakeSys(t)
			f.addSubsystem(0, nixosVar).addController(0, 0, ctrlSpec{state: state})
			varDisk := f.addHead(0, 1, 1, 100)
			f.addSubsystem(1, mikrotik+"nixos-var").addController(1, 1, ctrlSpec{state: state})
			f.addDirect(1, 1, 1, 100)
			untouched := func() string {
				return f.snapshot(f.ctrlDir(0), f.subsysDir(0), f.ctrlDir(1), f.subsysDir(1),
					filepath.Join(f.dev, varDisk), filepath.Join(f.dev, "nvme1n1"))
			}
			before := untouched()
			k := &fakeKernel{f: f, exports: map[string][]int{vol: {1}}}
			ff := newFakeFabrics()
			ff.connectFn = k.connect
			h := newTestHost(t, f, ff)
			h.settle = 10 * time.Millisecond
			ctx := context.Background()

			if _, err := h.Connect(ctx, Target{Address: "10.0.0.1", NQN: vol}, Options{}); err != nil {
				t.Fatalf("Connect: %v", err)
			}
			if _, err := h.Resolve(vol, 1); err != nil {
				t.Fatalf("Resolve: %v", err)
			}
			if _, err := h.Health(vol); err != nil {
				t.Fatalf("Health: %v", err)
			}
			if _, err := h.Rescan(ctx, vol, 1); err != nil {
				t.Fatalf("Rescan: %v", err)
			}
			if _, err := h.Subsystems(); err != nil {
				t.Fatalf("Subsystems: %v", err)
			}
			if err := h.Disconnect(ctx, vol); err != nil {
				t.Fatalf("Disconnect: %v", err)
			}
			rep, err := h.Sweep(ctx, nil, map[string]bool{nixosVar: true, mikrotik + "nixos-var": true}, func(Disk) bool { return false })
			if err != nil || len(rep.Disconnected) != 0 || len(rep.Kept) != 2 {
				t.Fatalf("Sweep = %+v, %v; want both unmanaged subsystems kept", rep, err)
			}
			for _, nqn := range []string{nixosVar, mikrotik + "nixos-var"} {
				if _, err := h.Connect(ctx, Target{Address: "10.0.0.1", NQN: nqn}, Options{}); !errors.Is(err, ErrNotManaged) {
					t.Errorf("Connect(%s) = %v", nqn, err)
				}
				if err := h.Disconnect(ctx, nqn); !errors.Is(err, ErrNotManaged) {
					t.Errorf("Disconnect(%s) = %v", nqn, err)
				}
				if _, err := h.Rescan(ctx, nqn, 1); !errors.Is(err, ErrNotManaged) {
					t.Errorf("Rescan(%s) = %v", nqn, err)
				}
				if _, err := h.Resolve(nqn, 1); !errors.Is(err, ErrNotManaged) {
					t.Errorf("Resolve(%s) = %v", nqn, err)
				}
				if _, err := h.Health(nqn); !errors.Is(err, ErrNotManaged) {
					t.Errorf("Health(%s) = %v", nqn, err)
				}
			}

			if after := untouched(); after != before {
				t.Errorf("unmanaged subsystems changed:\nbefore:\n%s\nafter:\n%s", before, after)
			}
			for _, w := range f.writeLog() {
				if strings.Contains(w, "/nvme0/") || strings.Contains(w, "/nvme1/") {
					t.Errorf("wrote to an unmanaged controller: %s", w)
				}
			}
			for _, opts := range ff.writes() {
				if !strings.Contains(opts, "nqn="+vol+",") {
					t.Errorf("connect string for another NQN written: %s", opts)
				}
			}
		})
	}
}
