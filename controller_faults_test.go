package main

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"

	"srvlab.io/rds-csi/routeros"
	"srvlab.io/rds-csi/routeros/sim"
)

// Each simulator fault must reach the CO with the code it acts on and a message that says
// what to do; an RDS outage is never NotFound or Internal.
func TestControllerErrorMapping(t *testing.T) {
	tests := []struct {
		name    string
		fault   func(e *ctrlEnv) (cleanup func())
		timeout time.Duration
		code    codes.Code
		parts   []string
	}{
		{"dropped connection", func(e *ctrlEnv) func() {
			e.sim.DropConnection("/disk add", sim.DropBeforeRun)
			return nil
		}, 0, codes.Unavailable, []string{"cannot reach the RDS at 127.0.0.1:", "check that the RDS is up"}},
		{"hang past the deadline", func(e *ctrlEnv) func() {
			return e.sim.Hang("/disk add").Release
		}, 300 * time.Millisecond, codes.DeadlineExceeded, []string{"did not answer in time"}},
		{"disk full", func(e *ctrlEnv) func() {
			e.sim.SetDiskFull(true)
			return nil
		}, 0, codes.ResourceExhausted, []string{`pool "storage-pool" has 1 TiB free (1099511627776 bytes)`, "needs 1 GiB"}},
		{"disk full, error on stderr with exit 1", func(e *ctrlEnv) func() {
			e.sim.SetDiskFull(true)
			e.sim.SetErrorOutput(sim.Stderr, 1)
			return nil
		}, 0, codes.ResourceExhausted, []string{"1 TiB free"}},
		{"RDS down", func(e *ctrlEnv) func() {
			if err := e.sim.Close(); err != nil {
				t.Fatal(err)
			}
			return nil
		}, 0, codes.Unavailable, []string{"cannot reach the RDS"}},
		{"pool not mounted", nil, 0, codes.Internal, []string{"not on a mounted disk"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newCtrlEnv(t, withConfig(func(c *Config) { c.RDSAllowedPaths = []string{"/no-pool/volumes"} }))
			req := createReq("pvc-fault", 1<<30)
			if tc.fault != nil {
				if cleanup := tc.fault(e); cleanup != nil {
					defer cleanup()
				}
			} else {
				req.Parameters = map[string]string{"volumePath": "/no-pool/volumes"}
			}
			ctx := testCtx(t)
			if tc.timeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tc.timeout)
				defer cancel()
			}
			_, err := e.c.CreateVolume(ctx, req)
			wantCode(t, err, tc.code, tc.parts...)
		})
	}
}

// With the RDS unreachable, every RPC that needs it answers Unavailable, never NotFound
// (which would tell the CO a volume is gone) nor OK for a delete that did nothing.
func TestControllerUnavailableEverywhere(t *testing.T) {
	e := newCtrlEnv(t)
	vol := e.mustCreate(createReq("pvc-down", 1<<30))
	if err := e.sim.Close(); err != nil {
		t.Fatal(err)
	}
	calls := map[string]func(context.Context) error{
		"DeleteVolume": func(ctx context.Context) error {
			_, err := e.c.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: vol.VolumeId})
			return err
		},
		"ControllerPublishVolume": func(ctx context.Context) error {
			_, err := e.c.ControllerPublishVolume(ctx, &csi.ControllerPublishVolumeRequest{VolumeId: vol.VolumeId, NodeId: "n1", VolumeCapability: rwo})
			return err
		},
		"ControllerExpandVolume": func(ctx context.Context) error {
			_, err := e.c.ControllerExpandVolume(ctx, &csi.ControllerExpandVolumeRequest{VolumeId: vol.VolumeId, CapacityRange: &csi.CapacityRange{RequiredBytes: 2 << 30}})
			return err
		},
		"ValidateVolumeCapabilities": func(ctx context.Context) error {
			_, err := e.c.ValidateVolumeCapabilities(ctx, &csi.ValidateVolumeCapabilitiesRequest{VolumeId: vol.VolumeId, VolumeCapabilities: []*csi.VolumeCapability{rwo}})
			return err
		},
		"ControllerGetVolume": func(ctx context.Context) error {
			_, err := e.c.ControllerGetVolume(ctx, &csi.ControllerGetVolumeRequest{VolumeId: vol.VolumeId})
			return err
		},
		"ControllerGetVolumeHealth": func(ctx context.Context) error {
			_, err := e.c.ControllerGetVolumeHealth(ctx, &csi.ControllerGetVolumeHealthRequest{VolumeId: vol.VolumeId})
			return err
		},
		"ListVolumes": func(ctx context.Context) error {
			_, err := e.c.ListVolumes(ctx, &csi.ListVolumesRequest{})
			return err
		},
		"GetCapacity": func(ctx context.Context) error {
			_, err := e.c.GetCapacity(ctx, &csi.GetCapacityRequest{})
			return err
		},
	}
	for name, call := range calls {
		t.Run(name, func(t *testing.T) {
			wantCode(t, call(testCtx(t)), codes.Unavailable, "cannot reach the RDS")
		})
	}
}

// A create cut off after the RDS made the disk is retried into the same volume: no
// duplicate disk, no second file, no leak.
func TestControllerInterruptedCreate(t *testing.T) {
	tests := []struct {
		name  string
		fault func(e *ctrlEnv) (ctx context.Context, release func())
		code  codes.Code
	}{
		{"connection dropped after /disk add ran", func(e *ctrlEnv) (context.Context, func()) {
			e.sim.DropConnection("/disk add", sim.DropAfterRun)
			return context.Background(), nil
		}, codes.Unavailable},
		{"deadline while reading the disk back", func(e *ctrlEnv) (context.Context, func()) {
			h := e.sim.Hang(`/disk print detail where slot="pvc-cut"`)
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			return ctx, func() { cancel(); h.Release() }
		}, codes.DeadlineExceeded},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newCtrlEnv(t)
			ctx, release := tc.fault(e)
			_, err := e.c.CreateVolume(ctx, createReq("pvc-cut", 3<<29))
			wantCode(t, err, tc.code)
			if release != nil {
				release()
			}
			if d := e.disk("pvc-cut"); d == nil {
				t.Fatal("the fault fired before the disk was made: the test proves nothing")
			}
			vol := e.mustCreate(createReq("pvc-cut", 3<<29))
			if vol.VolumeId != "pvc-cut" || vol.CapacityBytes != 1610612736 {
				t.Errorf("retry returned %v", vol)
			}
			if files := e.volumeFiles(); !slices.Equal(files, []string{"pvc-cut.img"}) {
				t.Errorf("files after the retry: %v, want exactly pvc-cut.img", files)
			}
			adds := 0
			for _, c := range e.sim.Commands() {
				if strings.HasPrefix(c, "/disk add") {
					adds++
				}
			}
			if adds != 2 { // the interrupted one and the retry's, which found the slot taken
				t.Errorf("%d /disk add commands, want 2", adds)
			}
		})
	}
}

// A delete cut off after the disk was removed but before its file was is completed by the
// retry, which finds the file by name and removes exactly it.
func TestControllerDeleteCompletesInterruptedDelete(t *testing.T) {
	e := newCtrlEnv(t, withConfig(func(c *Config) { c.RDSAllowedPaths = []string{"/storage-pool/fast"} }))
	req := createReq("pvc-half", 1<<30)
	req.Parameters = map[string]string{"volumePath": "/storage-pool/fast/db"}
	vol := e.mustCreate(req)
	other := e.mustCreate(createReq("pvc-other", 1<<30))
	file := e.sim.HostPath("/storage-pool/fast/db/pvc-half.img")

	e.sim.DropConnection("/file print", sim.DropBeforeRun) // RemoveFile lists the directory first
	_, err := e.c.DeleteVolume(testCtx(t), &csi.DeleteVolumeRequest{VolumeId: vol.VolumeId})
	wantCode(t, err, codes.Unavailable)
	if e.disk(vol.VolumeId) != nil || !fileExists(t, file) {
		t.Fatal("the fault did not leave the disk removed and the file in place: the test proves nothing")
	}
	if _, err := e.c.DeleteVolume(testCtx(t), &csi.DeleteVolumeRequest{VolumeId: vol.VolumeId}); err != nil {
		t.Fatalf("retried delete: %v", err)
	}
	if fileExists(t, file) {
		t.Error("the retry left the file")
	}
	if e.disk(other.VolumeId) == nil || !fileExists(t, e.sim.HostPath(testVolumePath+"/pvc-other.img")) {
		t.Error("another volume was touched")
	}
	removes := 0
	for _, c := range e.sim.Commands() {
		if strings.HasPrefix(c, "/file remove") {
			removes++
			if !strings.Contains(c, `"storage-pool/fast/db/pvc-half.img"`) {
				t.Errorf("removed something else: %s", c)
			}
		}
	}
	if removes != 1 {
		t.Errorf("%d /file remove commands, want 1", removes)
	}
}

// A leftover file that another disk uses is never removed.
func TestControllerDeleteKeepsFileInUse(t *testing.T) {
	e := newCtrlEnv(t)
	if _, err := e.sim.Exec(context.Background(), `/disk add type=file file-path="`+testVolumePath+`/pvc-shared.img" file-size=1G slot="hand-made" nvme-tcp-export=yes`); err != nil {
		t.Fatal(err)
	}
	_, err := e.c.DeleteVolume(testCtx(t), &csi.DeleteVolumeRequest{VolumeId: "pvc-shared"})
	wantCode(t, err, codes.FailedPrecondition, `used by disk "hand-made"`)
	if !fileExists(t, e.sim.HostPath(testVolumePath+"/pvc-shared.img")) {
		t.Error("a file in use was removed")
	}
}

// A second call on a volume while one is in flight is Aborted at once, and a stuck call
// on one volume does not block another.
func TestControllerConcurrentCallsAborted(t *testing.T) {
	e := newCtrlEnv(t)
	hold := e.sim.Hang(`slot="pvc-busy"`)
	var wg sync.WaitGroup
	wg.Go(func() {
		_, err := e.c.CreateVolume(testCtx(t), createReq("pvc-busy", 1<<30))
		if err != nil {
			t.Errorf("held create: %v", err)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := hold.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	_, err := e.c.CreateVolume(testCtx(t), createReq("pvc-busy", 1<<30))
	wantCode(t, err, codes.Aborted, "pvc-busy", "already in progress")
	_, err = e.c.DeleteVolume(testCtx(t), &csi.DeleteVolumeRequest{VolumeId: "pvc-busy"})
	wantCode(t, err, codes.Aborted)
	e.mustCreate(createReq("pvc-free", 1<<30))
	hold.Release()
	wg.Wait()
}

// Every answer from the RDS counts as contact for Probe; a transport failure does not.
func TestControllerRDSContactMakesReady(t *testing.T) {
	e := newCtrlEnv(t)
	if e.c.ready() {
		t.Fatal("ready before any contact")
	}
	_, err := e.c.client.GetDisk(testCtx(t), "pvc-none")
	if !errors.Is(err, routeros.ErrNotFound) || !e.c.ready() {
		t.Fatalf("after a not-found answer: err %v, ready %v; want ready", err, e.c.ready())
	}
}

// --rds-command-timeout bounds each RouterOS operation of an RPC whose own deadline is
// later; a copy command, which may run for hours, is bounded by the copy tracker instead.
func TestControllerRDSCommandTimeout(t *testing.T) {
	const bound = 300 * time.Millisecond
	e := newCtrlEnv(t, withConfig(func(c *Config) { c.RDSCommandTimeout = bound }))
	hold := e.sim.Hang("/disk add")
	start := time.Now()
	_, err := e.c.CreateVolume(testCtx(t), createReq("pvc-slow", 1<<30))
	wantCode(t, err, codes.DeadlineExceeded, "did not answer in time", "--rds-command-timeout")
	if el := time.Since(start); el > 5*time.Second {
		t.Errorf("CreateVolume on a hung RDS answered after %v, want about %v", el, bound)
	}
	hold.Release()

	src := e.mustCreate(createReq("pvc-src", 16<<20))
	e.c.copies.waitMax = 0
	copyHold := e.sim.Hang("/file copy")
	if _, err := e.c.CreateSnapshot(testCtx(t), snapReq("snapshot-slow", src.VolumeId)); err != nil {
		t.Fatal(err)
	}
	if err := copyHold.Wait(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * bound)
	copyHold.Release()
	e.mustSnapshot("snapshot-slow", src.VolumeId)
	if n := countPrefix(e.sim.Commands(), "/file copy"); n != 1 {
		t.Errorf("%d copy commands, want 1: the copy outlasting --rds-command-timeout must not be cut", n)
	}
}

func countPrefix(lines []string, prefix string) int {
	n := 0
	for _, l := range lines {
		if strings.HasPrefix(l, prefix) {
			n++
		}
	}
	return n
}
