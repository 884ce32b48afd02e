package nvme

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestDisconnect(t *testing.T) {
	vol := testPrefix + "a"
	tests := []struct {
		name       string
		build      func(f *fakeSys)
		deleteFn   func(f *fakeSys) func(c int) error
		wantWrites []string // relative to class/nvme
		wantErr    error
		errHas     string
	}{
		{
			name:       "live controller",
			build:      func(f *fakeSys) { f.addSubsystem(1, vol).addController(1, 1, ctrlSpec{}); f.addHead(1, 1, 1, 100) },
			wantWrites: []string{"nvme1/delete_controller=1"},
		},
		{
			name: "reconnecting controller: settings lowered first",
			build: func(f *fakeSys) {
				f.addSubsystem(1, vol).addController(1, 1, ctrlSpec{state: "connecting"})
				f.addHead(1, 1, 1, 100)
			},
			wantWrites: []string{"nvme1/reconnect_delay=1", "nvme1/ctrl_loss_tmo=0", "nvme1/delete_controller=1"},
		},
		{
			name: "two paths",
			build: func(f *fakeSys) {
				f.addSubsystem(1, vol).addController(1, 1, ctrlSpec{}).addController(1, 2, ctrlSpec{state: "resetting", traddr: "10.0.0.2"})
				f.addHead(1, 1, 1, 100)
			},
			wantWrites: []string{"nvme1/delete_controller=1", "nvme2/reconnect_delay=1", "nvme2/ctrl_loss_tmo=0", "nvme2/delete_controller=1"},
		},
		{
			name:  "not connected is success",
			build: func(f *fakeSys) {},
		},
		{
			name: "only pvc-10 connected: pvc-1 is not connected",
			build: func(f *fakeSys) {
				f.addSubsystem(1, vol+"0").addController(1, 1, ctrlSpec{})
				f.addHead(1, 1, 1, 100)
			},
		},
		{
			name: "stale subsystem without controllers is not a connection",
			build: func(f *fakeSys) {
				f.held[1] = true
				f.addSubsystem(1, vol).addController(1, 1, ctrlSpec{})
				f.addHead(1, 1, 1, 100)
				f.removeController(1)
			},
		},
		{
			name:  "controller vanishes before the delete (ctrl loss expired)",
			build: func(f *fakeSys) { f.addSubsystem(1, vol).addController(1, 1, ctrlSpec{}) },
			deleteFn: func(f *fakeSys) func(int) error {
				return func(c int) error { f.removeController(c); return unix.ENOENT }
			},
			wantWrites: []string{"nvme1/delete_controller=1"},
		},
		{
			name:  "delete accepted but controller stays: error after the deadline",
			build: func(f *fakeSys) { f.addSubsystem(1, vol).addController(1, 1, ctrlSpec{}) },
			deleteFn: func(f *fakeSys) func(int) error {
				return func(c int) error { f.set(fmt.Sprintf("class/nvme/nvme%d/state", c), "deleting"); return nil }
			},
			wantWrites: []string{"nvme1/delete_controller=1"},
			wantErr:    ErrTimeout, errHas: "nvme1 deleting",
		},
		{
			name:  "delete hangs (filesystem still mounted)",
			build: func(f *fakeSys) { f.addSubsystem(1, vol).addController(1, 1, ctrlSpec{}) },
			deleteFn: func(f *fakeSys) func(int) error {
				return func(c int) error { time.Sleep(300 * time.Millisecond); return nil }
			},
			wantWrites: []string{"nvme1/delete_controller=1"},
			wantErr:    ErrTimeout, errHas: "unmount it first",
		},
		{
			name:  "controller not started yet",
			build: func(f *fakeSys) { f.addSubsystem(1, vol).addController(1, 1, ctrlSpec{state: "new"}) },
			deleteFn: func(f *fakeSys) func(int) error {
				return func(int) error { return fmt.Errorf("write: %w", unix.EBUSY) }
			},
			wantWrites: []string{"nvme1/reconnect_delay=1", "nvme1/ctrl_loss_tmo=0", "nvme1/delete_controller=1"},
			errHas:     "EBUSY",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeSys(t)
			f.addSubsystem(0, nixosVar).addController(0, 0, ctrlSpec{})
			f.addHead(0, 1, 1, 100)
			tt.build(f)
			if tt.deleteFn != nil {
				f.deleteFn = tt.deleteFn(f)
			}
			unmanaged := f.snapshot(f.ctrlDir(0), f.subsysDir(0))
			h := newTestHost(t, f, newFakeFabrics())
			if errors.Is(tt.wantErr, ErrTimeout) {
				h.cfg.OpTimeout = 100 * time.Millisecond
			}
			var observed []error
			h.cfg.Observe = func(ev string, err error) {
				if ev == "disconnect" {
					observed = append(observed, err)
				}
			}

			err := h.Disconnect(context.Background(), vol)
			var writes []string
			for _, w := range f.writeLog() {
				writes = append(writes, strings.TrimPrefix(w, f.root+"/class/nvme/"))
			}
			if fmt.Sprint(writes) != fmt.Sprint(tt.wantWrites) {
				t.Errorf("sysfs writes %v, want %v", writes, tt.wantWrites)
			}
			if f.snapshot(f.ctrlDir(0), f.subsysDir(0)) != unmanaged {
				t.Error("Disconnect changed the unmanaged subsystem")
			}
			if len(observed) != 1 || observed[0] != err {
				t.Errorf("observed %v, want the one result %v", observed, err)
			}
			if tt.wantErr != nil || tt.errHas != "" {
				if (tt.wantErr != nil && !errors.Is(err, tt.wantErr)) || !strings.Contains(fmt.Sprint(err), tt.errHas) {
					t.Fatalf("Disconnect = %v, want %v containing %q", err, tt.wantErr, tt.errHas)
				}
				return
			}
			if err != nil {
				t.Fatalf("Disconnect: %v", err)
			}
			if left, _ := h.sys.controllersOf(vol); len(left) != 0 {
				t.Fatalf("controllers left after Disconnect: %v", left)
			}
			if err := h.Disconnect(context.Background(), vol); err != nil {
				t.Fatalf("second Disconnect = %v, want nil (idempotent)", err)
			}
		})
	}
}

func TestDisconnectUnmanagedIsRefused(t *testing.T) {
	f := newFakeSys(t)
	f.addSubsystem(0, nixosVar).addController(0, 0, ctrlSpec{state: "connecting"})
	f.addHead(0, 1, 1, 100)
	before := f.snapshot(f.root, f.dev)
	err := newTestHost(t, f, newFakeFabrics()).Disconnect(context.Background(), nixosVar)
	if !errors.Is(err, ErrNotManaged) || !strings.Contains(err.Error(), nixosVar) {
		t.Fatalf("Disconnect(%s) = %v, want ErrNotManaged naming it", nixosVar, err)
	}
	if len(f.writeLog()) != 0 || f.snapshot(f.root, f.dev) != before {
		t.Fatalf("Disconnect of an unmanaged NQN wrote to sysfs: %v", f.writeLog())
	}
}

func TestRescan(t *testing.T) {
	vol := testPrefix + "a"
	tests := []struct {
		name     string
		states   []string
		grow     bool
		wantSize int64
		wantErr  error
	}{
		{name: "grown", states: []string{"live"}, grow: true, wantSize: 400 * 512},
		{name: "not grown: same size after the settle time", states: []string{"live"}, wantSize: 200 * 512},
		{name: "two paths, one live", states: []string{"connecting", "live"}, grow: true, wantSize: 400 * 512},
		{name: "no live controller", states: []string{"connecting"}, wantErr: ErrNotLive},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeSys(t)
			f.addSubsystem(0, nixosVar).addController(0, 0, ctrlSpec{})
			f.addHead(0, 1, 1, 100)
			f.addSubsystem(1, vol)
			for i, st := range tt.states {
				f.addController(1, 1+i, ctrlSpec{state: st, traddr: fmt.Sprintf("10.0.0.%d", i+1)})
			}
			name := f.addHead(1, 1, 1, 200)
			if tt.grow {
				f.pending[name] = 400 // the target grew; the kernel sees it on rescan
			}
			unmanaged := f.snapshot(f.ctrlDir(0), f.subsysDir(0))
			h := newTestHost(t, f, newFakeFabrics())
			h.settle = 50 * time.Millisecond
			d, err := h.Rescan(context.Background(), vol, 0)
			if f.snapshot(f.ctrlDir(0), f.subsysDir(0)) != unmanaged {
				t.Error("Rescan changed the unmanaged subsystem")
			}
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("Rescan = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil || d.SizeBytes != tt.wantSize {
				t.Fatalf("Rescan = %+v, %v; want size %d", d, err, tt.wantSize)
			}
			for _, w := range f.writeLog() {
				if !strings.HasSuffix(w, "/rescan_controller=1") {
					t.Errorf("unexpected write %s", w)
				}
			}
		})
	}
	t.Run("unmanaged", func(t *testing.T) {
		f := newFakeSys(t)
		f.addSubsystem(0, nixosVar).addController(0, 0, ctrlSpec{})
		f.addHead(0, 1, 1, 100)
		_, err := newTestHost(t, f, newFakeFabrics()).Rescan(context.Background(), nixosVar, 1)
		if !errors.Is(err, ErrNotManaged) || len(f.writeLog()) != 0 {
			t.Fatalf("Rescan(unmanaged) = %v with writes %v", err, f.writeLog())
		}
	})
}
