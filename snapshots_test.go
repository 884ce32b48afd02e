package main

import (
	"bytes"
	"context"
	"os"
	"path"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"srvlab.io/rds-csi/routeros/sim"
)

func snapReq(name, source string) *csi.CreateSnapshotRequest {
	return &csi.CreateSnapshotRequest{Name: name, SourceVolumeId: source}
}

func fromSnapshot(req *csi.CreateVolumeRequest, id string) *csi.CreateVolumeRequest {
	req.VolumeContentSource = &csi.VolumeContentSource{Type: &csi.VolumeContentSource_Snapshot{
		Snapshot: &csi.VolumeContentSource_SnapshotSource{SnapshotId: id}}}
	return req
}

func fromVolume(req *csi.CreateVolumeRequest, id string) *csi.CreateVolumeRequest {
	req.VolumeContentSource = &csi.VolumeContentSource{Type: &csi.VolumeContentSource_Volume{
		Volume: &csi.VolumeContentSource_VolumeSource{VolumeId: id}}}
	return req
}

// volumeFile is the simulator's backing file of a volume in the default volume path.
func (e *ctrlEnv) volumeFile(id string) string {
	return e.sim.HostPath(path.Join(testVolumePath, volumeFileName(id)))
}

// fill writes a pattern at the start and near the end of a file, so a copy that misses
// either end is caught.
func fill(t testing.TB, file, seed string) []byte {
	t.Helper()
	st, err := os.Stat(file)
	if err != nil {
		t.Fatal(err)
	}
	data := pattern(seed, 64<<10)
	writeSync(t, file, data, 0)
	writeSync(t, file, data, st.Size()-int64(len(data)))
	return data
}

// holds checks that a file starts and ends (at srcSize) with data.
func holds(t testing.TB, file string, data []byte, srcSize int64) {
	t.Helper()
	checkData(t, file, data, 0)
	checkData(t, file, data, srcSize-int64(len(data)))
}

// mustSnapshot creates a snapshot and waits until it is ready.
func (e *ctrlEnv) mustSnapshot(name, source string) *csi.Snapshot {
	e.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := e.c.CreateSnapshot(testCtx(e.t), snapReq(name, source))
		if err != nil {
			e.t.Fatalf("CreateSnapshot(%s of %s): %v", name, source, err)
		}
		if resp.Snapshot.ReadyToUse {
			return resp.Snapshot
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("snapshot %s never became ready", name)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// mustCreateEventually retries a CreateVolume while it answers Aborted (a copy running).
func (e *ctrlEnv) mustCreateEventually(req *csi.CreateVolumeRequest) (*csi.Volume, int) {
	e.t.Helper()
	aborted := 0
	for deadline := time.Now().Add(20 * time.Second); ; {
		resp, err := e.c.CreateVolume(testCtx(e.t), req)
		switch {
		case err == nil:
			return resp.Volume, aborted
		case status.Code(err) != codes.Aborted || time.Now().After(deadline):
			e.t.Fatalf("CreateVolume(%s): %v", req.Name, err)
		}
		aborted++
		time.Sleep(20 * time.Millisecond)
	}
}

var snapshotFileRe = regexp.MustCompile(`^/storage-pool/metal-csi/\.snapshots/([a-z0-9-]+)_([a-z0-9-]+)_(\d+)_(\d+)\.img$`)

func TestSnapshotCreate(t *testing.T) {
	e := newCtrlEnv(t)
	src := e.mustCreate(createReq("pvc-src", 64<<20))
	other := e.mustCreate(createReq("pvc-other", 64<<20))
	data := fill(t, e.volumeFile(src.VolumeId), "src")
	before := time.Now().Add(-time.Second)

	snap := e.mustSnapshot("snapshot-a", src.VolumeId)
	if snap.SnapshotId != "snapshot-a" || snap.SourceVolumeId != src.VolumeId || snap.SizeBytes != 64<<20 ||
		snap.CreationTime.AsTime().Before(before.Truncate(time.Second)) || snap.CreationTime.AsTime().After(time.Now()) {
		t.Errorf("snapshot %+v", snap)
	}
	again, err := e.c.CreateSnapshot(testCtx(t), snapReq("snapshot-a", src.VolumeId))
	if err != nil || again.Snapshot.SnapshotId != snap.SnapshotId || !again.Snapshot.CreationTime.AsTime().Equal(snap.CreationTime.AsTime()) ||
		!again.Snapshot.ReadyToUse || again.Snapshot.SizeBytes != snap.SizeBytes {
		t.Errorf("the same request again: %+v, %v; want the same snapshot", again, err)
	}
	entries, _ := os.ReadDir(e.sim.HostPath(testVolumePath + "/.snapshots"))
	if len(entries) != 1 || !snapshotFileRe.MatchString(testVolumePath+"/.snapshots/"+entries[0].Name()) {
		t.Fatalf("snapshot directory holds %v, want one file <id>_<source>_<size>_<time>.img", entries)
	}
	snapFile := e.sim.HostPath(testVolumePath + "/.snapshots/" + entries[0].Name())
	holds(t, snapFile, data, 64<<20)
	out, err := e.sim.Exec(context.Background(), `/disk print detail`)
	if err != nil || strings.Contains(out, ".snapshots") {
		t.Errorf("a snapshot must never be a disk:\n%s", out)
	}

	writeSync(t, e.volumeFile(src.VolumeId), []byte("written after the snapshot"), 0)
	checkData(t, snapFile, data[:64], 0)

	tests := []struct {
		name  string
		req   *csi.CreateSnapshotRequest
		code  codes.Code
		parts []string
	}{
		{"no name", snapReq("", src.VolumeId), codes.InvalidArgument, []string{"name is required"}},
		{"no source", snapReq("snapshot-b", ""), codes.InvalidArgument, []string{"source_volume_id is required"}},
		{"same name, other source", snapReq("snapshot-a", other.VolumeId), codes.AlreadyExists, []string{"snapshot-a", "of volume pvc-src", "pvc-other"}},
		{"missing source", snapReq("snapshot-b", "pvc-missing"), codes.NotFound, []string{"pvc-missing"}},
		{"source no volume can have", snapReq("snapshot-b", "Not/A/Volume"), codes.NotFound, []string{"not a volume ID"}},
		{"unknown parameter", &csi.CreateSnapshotRequest{Name: "snapshot-b", SourceVolumeId: src.VolumeId, Parameters: map[string]string{"flavour": "x"}},
			codes.InvalidArgument, []string{"flavour", "take none"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.c.CreateSnapshot(testCtx(t), tc.req)
			wantCode(t, err, tc.code, tc.parts...)
		})
	}
	sidecar := &csi.CreateSnapshotRequest{Name: "snapshot-c", SourceVolumeId: src.VolumeId,
		Parameters: map[string]string{"csi.storage.k8s.io/volumesnapshot/name": "s"}}
	if _, err := e.c.CreateSnapshot(testCtx(t), sidecar); err != nil {
		t.Errorf("the sidecar's own parameters: %v", err)
	}
	if long := e.mustSnapshot(strings.Repeat("Upper-Case-And-Long-", 8), src.VolumeId); !strings.HasPrefix(long.SnapshotId, "snap-") {
		t.Errorf("a name that cannot be an ID gets %q", long.SnapshotId)
	}
}

// With a copy that takes time, CreateSnapshot answers ready_to_use=false until the copy is
// complete, then true; so does ListSnapshots; the data is all there once ready.
func TestSnapshotNotReadyWhileCopying(t *testing.T) {
	e := newCtrlEnv(t, withSim(sim.Options{CopyDuration: 800 * time.Millisecond}))
	e.c.copies.waitMax = 0 // answer at once, as to a CO with a short deadline
	src := e.mustCreate(createReq("pvc-src", 32<<20))
	data := fill(t, e.volumeFile(src.VolumeId), "slow")

	first, err := e.c.CreateSnapshot(testCtx(t), snapReq("snapshot-slow", src.VolumeId))
	if err != nil {
		t.Fatal(err)
	}
	if first.Snapshot.ReadyToUse {
		t.Fatal("ready at once although the copy takes 800 ms")
	}
	list, err := e.c.ListSnapshots(testCtx(t), &csi.ListSnapshotsRequest{SnapshotId: "snapshot-slow"})
	if err != nil || len(list.Entries) != 1 || list.Entries[0].Snapshot.ReadyToUse {
		t.Fatalf("listed while copying: %+v, %v; want one entry, not ready", list, err)
	}
	if _, err := e.c.CreateVolume(testCtx(t), fromSnapshot(createReq("pvc-early", 32<<20), "snapshot-slow")); status.Code(err) != codes.Aborted {
		t.Fatalf("restore from a snapshot not ready: %v, want Aborted", err)
	}
	snap := e.mustSnapshot("snapshot-slow", src.VolumeId)
	if !snap.CreationTime.AsTime().Equal(first.Snapshot.CreationTime.AsTime()) {
		t.Errorf("creation time moved from %v to %v", first.Snapshot.CreationTime.AsTime(), snap.CreationTime.AsTime())
	}
	files, _ := os.ReadDir(e.sim.HostPath(testVolumePath + "/.snapshots"))
	holds(t, e.sim.HostPath(testVolumePath+"/.snapshots/"+files[0].Name()), data, 32<<20)
	list, err = e.c.ListSnapshots(testCtx(t), &csi.ListSnapshotsRequest{SnapshotId: "snapshot-slow"})
	if err != nil || len(list.Entries) != 1 || !list.Entries[0].Snapshot.ReadyToUse {
		t.Fatalf("listed once copied: %+v, %v; want ready", list, err)
	}
}

// A copy that preallocates its destination shows the full size while it is still being
// written. Completion must not be taken from the size: every "ready" answer must come
// with all of the data in place.
func TestSnapshotPreallocatedCopyIsNotReadyEarly(t *testing.T) {
	e := newCtrlEnv(t, withSim(sim.Options{CopyDuration: 3 * time.Second, CopyPreallocate: true}))
	e.c.copies.waitMax = 0
	e.c.copies.settle = 1500 * time.Millisecond // spans a tick of last-modified's seconds
	src := e.mustCreate(createReq("pvc-src", 16<<20))
	data := pattern("prealloc", 16<<20) // data in every piece the copy writes
	writeSync(t, e.volumeFile(src.VolumeId), data, 0)

	sawFullButIncomplete := false
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		resp, err := e.c.CreateSnapshot(testCtx(t), snapReq("snapshot-pre", src.VolumeId))
		if err != nil {
			t.Fatal(err)
		}
		files, _ := os.ReadDir(e.sim.HostPath(testVolumePath + "/.snapshots"))
		if len(files) != 1 {
			continue
		}
		got, _ := os.ReadFile(e.sim.HostPath(testVolumePath + "/.snapshots/" + files[0].Name()))
		complete := bytes.Equal(got, data)
		if resp.Snapshot.ReadyToUse {
			if !complete {
				t.Fatal("ready_to_use=true while the preallocated copy was still being written")
			}
			if !sawFullButIncomplete {
				t.Error("never saw the copy at full size but incomplete: the test did not exercise the risk")
			}
			return
		}
		if len(got) == len(data) && !complete {
			sawFullButIncomplete = true
		}
	}
	t.Fatal("the snapshot never became ready")
}

func TestSnapshotDelete(t *testing.T) {
	e := newCtrlEnv(t)
	src := e.mustCreate(createReq("pvc-src", 16<<20))
	data := fill(t, e.volumeFile(src.VolumeId), "keep")
	e.mustSnapshot("snapshot-1", src.VolumeId)
	e.mustSnapshot("snapshot-2", src.VolumeId)

	for range 2 {
		if _, err := e.c.DeleteSnapshot(testCtx(t), &csi.DeleteSnapshotRequest{SnapshotId: "snapshot-1"}); err != nil {
			t.Fatal(err)
		}
	}
	list, err := e.c.ListSnapshots(testCtx(t), &csi.ListSnapshotsRequest{})
	if err != nil || len(list.Entries) != 1 || list.Entries[0].Snapshot.SnapshotId != "snapshot-2" {
		t.Fatalf("after deleting snapshot-1: %+v, %v", list, err)
	}
	if d := e.disk(src.VolumeId); d == nil {
		t.Fatal("deleting a snapshot touched its source volume")
	}
	holds(t, e.volumeFile(src.VolumeId), data, 16<<20)
	for _, id := range []string{"never-made", "Not A Snapshot"} {
		if _, err := e.c.DeleteSnapshot(testCtx(t), &csi.DeleteSnapshotRequest{SnapshotId: id}); err != nil {
			t.Errorf("DeleteSnapshot(%q): %v, want OK", id, err)
		}
	}
	_, err = e.c.DeleteSnapshot(testCtx(t), &csi.DeleteSnapshotRequest{})
	wantCode(t, err, codes.InvalidArgument, "snapshot_id is required")

	// the snapshot outlives its source, and still restores
	if _, err := e.c.DeleteVolume(testCtx(t), &csi.DeleteVolumeRequest{VolumeId: src.VolumeId}); err != nil {
		t.Fatal(err)
	}
	got, err := e.c.GetSnapshot(testCtx(t), &csi.GetSnapshotRequest{SnapshotId: "snapshot-2"})
	if err != nil || !got.Snapshot.ReadyToUse || got.Snapshot.SourceVolumeId != src.VolumeId || got.Snapshot.SizeBytes != 16<<20 {
		t.Fatalf("snapshot after its source was deleted: %+v, %v", got, err)
	}
	restored := e.mustCreate(fromSnapshot(createReq("pvc-restored", 16<<20), "snapshot-2"))
	holds(t, e.volumeFile(restored.VolumeId), data, 16<<20)
	if _, err := e.c.GetSnapshot(testCtx(t), &csi.GetSnapshotRequest{SnapshotId: "snapshot-1"}); status.Code(err) != codes.NotFound {
		t.Errorf("GetSnapshot of a deleted snapshot: %v, want NotFound", err)
	}
}

func TestSnapshotList(t *testing.T) {
	e := newCtrlEnv(t)
	a := e.mustCreate(createReq("pvc-a", 8<<20))
	b := e.mustCreate(createReq("pvc-b", 8<<20))
	for _, s := range []struct{ name, src string }{
		{"snapshot-3", a.VolumeId}, {"snapshot-1", b.VolumeId}, {"snapshot-2", a.VolumeId}, {"snapshot-4", b.VolumeId},
	} {
		e.mustSnapshot(s.name, s.src)
	}
	ids := func(resp *csi.ListSnapshotsResponse) string {
		var out []string
		for _, en := range resp.Entries {
			out = append(out, en.Snapshot.SnapshotId)
			if !en.Snapshot.ReadyToUse || en.Snapshot.CreationTime == nil || en.Snapshot.SizeBytes != 8<<20 {
				t.Errorf("entry %+v", en.Snapshot)
			}
		}
		return strings.Join(out, ",")
	}
	for _, tc := range []struct {
		name string
		req  *csi.ListSnapshotsRequest
		want string
	}{
		{"all, in ID order", &csi.ListSnapshotsRequest{}, "snapshot-1,snapshot-2,snapshot-3,snapshot-4"},
		{"by ID", &csi.ListSnapshotsRequest{SnapshotId: "snapshot-2"}, "snapshot-2"},
		{"by missing ID", &csi.ListSnapshotsRequest{SnapshotId: "snapshot-9"}, ""},
		{"by an ID no snapshot can have", &csi.ListSnapshotsRequest{SnapshotId: "Bad/ID"}, ""},
		{"by source", &csi.ListSnapshotsRequest{SourceVolumeId: a.VolumeId}, "snapshot-2,snapshot-3"},
		{"by missing source", &csi.ListSnapshotsRequest{SourceVolumeId: "pvc-none"}, ""},
		{"by ID and other source", &csi.ListSnapshotsRequest{SnapshotId: "snapshot-1", SourceVolumeId: a.VolumeId}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := e.c.ListSnapshots(testCtx(t), tc.req)
			if err != nil {
				t.Fatal(err)
			}
			if got := ids(resp); got != tc.want || resp.NextToken != "" {
				t.Errorf("got %q (next %q), want %q", got, resp.NextToken, tc.want)
			}
		})
	}
	t.Run("pages", func(t *testing.T) {
		var got []string
		token := ""
		for range 3 {
			resp, err := e.c.ListSnapshots(testCtx(t), &csi.ListSnapshotsRequest{MaxEntries: 3, StartingToken: token})
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, ids(resp))
			if token = resp.NextToken; token == "" {
				break
			}
			if strings.Contains(token, "snapshot") {
				t.Errorf("token %q is not opaque", token)
			}
		}
		if strings.Join(got, "|") != "snapshot-1,snapshot-2,snapshot-3|snapshot-4" {
			t.Errorf("pages %q", got)
		}
	})
	t.Run("bad token", func(t *testing.T) {
		_, err := e.c.ListSnapshots(testCtx(t), &csi.ListSnapshotsRequest{StartingToken: "not a token"})
		wantCode(t, err, codes.Aborted, "not returned by this driver")
		_, err = e.c.ListSnapshots(testCtx(t), &csi.ListSnapshotsRequest{MaxEntries: -1})
		wantCode(t, err, codes.InvalidArgument, "negative")
	})
}

// restartController builds a second controller over the same simulated RDS, as a new
// process would be: nothing carried over but the RDS.
func (e *ctrlEnv) restartController() *controllerService {
	e.t.Helper()
	cfg := *e.c.cfg
	m := newMetrics()
	c, err := newController(&cfg, discardLog, m, rdsClientConfig(&cfg, discardLog, m), nil)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(c.close)
	quickCopies(c.copies)
	return c
}

// A controller restart loses nothing: the new process lists the same snapshots with the
// same IDs, sources, sizes and creation times, ready, and restores from them.
func TestSnapshotSurvivesRestart(t *testing.T) {
	e := newCtrlEnv(t)
	src := e.mustCreate(createReq("pvc-src", 16<<20))
	data := fill(t, e.volumeFile(src.VolumeId), "restart")
	s1 := e.mustSnapshot("snapshot-1", src.VolumeId)
	s2 := e.mustSnapshot(strings.Repeat("LONG-NAME-", 10), src.VolumeId)
	before, err := e.c.ListSnapshots(testCtx(t), &csi.ListSnapshotsRequest{})
	if err != nil {
		t.Fatal(err)
	}

	c2 := e.restartController()
	after, err := c2.ListSnapshots(testCtx(t), &csi.ListSnapshotsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(after.Entries) != len(before.Entries) {
		t.Fatalf("after a restart %d snapshots, before %d", len(after.Entries), len(before.Entries))
	}
	for i := range after.Entries {
		a, b := after.Entries[i].Snapshot, before.Entries[i].Snapshot
		if a.SnapshotId != b.SnapshotId || a.SourceVolumeId != b.SourceVolumeId || a.SizeBytes != b.SizeBytes ||
			!a.CreationTime.AsTime().Equal(b.CreationTime.AsTime()) || !a.ReadyToUse {
			t.Errorf("after a restart %+v, before %+v", a, b)
		}
	}
	for _, s := range []*csi.Snapshot{s1, s2} {
		again, err := c2.CreateSnapshot(testCtx(t), snapReq(map[string]string{s1.SnapshotId: "snapshot-1", s2.SnapshotId: strings.Repeat("LONG-NAME-", 10)}[s.SnapshotId], src.VolumeId))
		if err != nil || again.Snapshot.SnapshotId != s.SnapshotId || !again.Snapshot.CreationTime.AsTime().Equal(s.CreationTime.AsTime()) || !again.Snapshot.ReadyToUse {
			t.Errorf("CreateSnapshot retried after a restart: %+v, %v; want %+v", again, err, s)
		}
	}
	resp, err := c2.CreateVolume(testCtx(t), fromSnapshot(createReq("pvc-restored", 16<<20), s2.SnapshotId))
	if err != nil {
		t.Fatal(err)
	}
	holds(t, e.volumeFile(resp.Volume.VolumeId), data, 16<<20)
}

func TestRestoreFromSnapshot(t *testing.T) {
	e := newCtrlEnv(t)
	src := e.mustCreate(createReq("pvc-src", 64<<20))
	data := fill(t, e.volumeFile(src.VolumeId), "restore")
	snap := e.mustSnapshot("snapshot-r", src.VolumeId)
	writeSync(t, e.volumeFile(src.VolumeId), []byte("after the snapshot"), 0)

	t.Run("same size", func(t *testing.T) {
		req := fromSnapshot(createReq("pvc-same", 64<<20), snap.SnapshotId)
		vol := e.mustCreate(req)
		if vol.CapacityBytes != 64<<20 || vol.ContentSource.GetSnapshot().GetSnapshotId() != snap.SnapshotId ||
			vol.VolumeContext[contextNQN] != defaultNQN(vol.VolumeId) {
			t.Errorf("restored volume %+v", vol)
		}
		holds(t, e.volumeFile(vol.VolumeId), data, 64<<20)
		if d := e.disk(vol.VolumeId); d == nil || !d.NVMeExport || d.Size != 64<<20 {
			t.Errorf("restored disk %+v", d)
		}
		again := e.mustCreate(req)
		if again.VolumeId != vol.VolumeId || again.CapacityBytes != vol.CapacityBytes {
			t.Errorf("retry gave %+v, want %+v", again, vol)
		}
	})
	t.Run("larger grows, data kept", func(t *testing.T) {
		vol := e.mustCreate(fromSnapshot(createReq("pvc-larger", 100<<20), snap.SnapshotId))
		if vol.CapacityBytes != 100<<20 || e.disk(vol.VolumeId).Size != 100<<20 {
			t.Errorf("larger restore: %+v", vol)
		}
		holds(t, e.volumeFile(vol.VolumeId), data, 64<<20)
		checkData(t, e.volumeFile(vol.VolumeId), make([]byte, 4096), 100<<20-4096)
	})
	t.Run("no size is the snapshot's", func(t *testing.T) {
		vol := e.mustCreate(fromSnapshot(createReq("pvc-nosize", 0), snap.SnapshotId))
		if vol.CapacityBytes != 64<<20 {
			t.Errorf("restore without a size: %d bytes, want the snapshot's", vol.CapacityBytes)
		}
	})
	limited := fromSnapshot(createReq("pvc-limited", 0), snap.SnapshotId)
	limited.CapacityRange.LimitBytes = 32 << 20
	for _, tc := range []struct {
		name  string
		req   *csi.CreateVolumeRequest
		code  codes.Code
		parts []string
	}{
		{"smaller", fromSnapshot(createReq("pvc-smaller", 32<<20), snap.SnapshotId), codes.OutOfRange, []string{"snapshot snapshot-r holds 64 MiB", "at least 67108864 bytes"}},
		{"limit below", limited, codes.OutOfRange, []string{"64 MiB"}},
		{"missing snapshot", fromSnapshot(createReq("pvc-x", 64<<20), "snapshot-none"), codes.NotFound, []string{"snapshot snapshot-none does not exist"}},
		{"same name from another snapshot", fromSnapshot(createReq("pvc-same", 64<<20), "snapshot-none"), codes.AlreadyExists, []string{"was not made from snapshot snapshot-none"}},
		{"same name as a plain volume", fromSnapshot(createReq("pvc-src", 64<<20), snap.SnapshotId), codes.AlreadyExists, []string{"was not made from snapshot snapshot-r"}},
		{"a plain create over a restored volume's name", createReq("pvc-same", 128<<20), codes.AlreadyExists, []string{"size"}},
		{"empty source", &csi.CreateVolumeRequest{Name: "pvc-x", VolumeCapabilities: []*csi.VolumeCapability{rwo},
			VolumeContentSource: &csi.VolumeContentSource{}}, codes.InvalidArgument, []string{"neither a snapshot nor a volume"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.c.CreateVolume(testCtx(t), tc.req)
			wantCode(t, err, tc.code, tc.parts...)
			if tc.code != codes.AlreadyExists && e.disk(tc.req.Name) != nil {
				t.Errorf("a refused restore left disk %s", tc.req.Name)
			}
			if tc.code != codes.AlreadyExists && fileExists(t, e.volumeFile(tc.req.Name)) {
				t.Errorf("a refused restore left file %s", tc.req.Name)
			}
		})
	}
}

// While the copy runs the restore answers Aborted and no disk exists (a half-copied volume
// is never exported); then the volume appears with all of the data.
func TestRestoreWaitsForTheCopy(t *testing.T) {
	e := newCtrlEnv(t, withSim(sim.Options{CopyDuration: 600 * time.Millisecond}))
	src := e.mustCreate(createReq("pvc-src", 32<<20))
	data := fill(t, e.volumeFile(src.VolumeId), "wait")
	snap := e.mustSnapshot("snapshot-w", src.VolumeId)
	e.c.copies.waitMax = 0

	req := fromSnapshot(createReq("pvc-restored", 48<<20), snap.SnapshotId)
	_, err := e.c.CreateVolume(testCtx(t), req)
	wantCode(t, err, codes.Aborted, "copying", "created when the copy is complete")
	if d := e.disk("pvc-restored"); d != nil {
		t.Fatalf("disk %+v exists while its file is still being copied", d)
	}
	if links, _ := os.ReadDir(e.sim.Dir() + "/" + sim.ExportsDirName); len(links) != 1 {
		t.Fatalf("exports while copying: %v, want only the source's", links)
	}
	vol, aborted := e.mustCreateEventually(req)
	if aborted == 0 || vol.CapacityBytes != 48<<20 {
		t.Errorf("restore after %d Aborted answers: %+v", aborted, vol)
	}
	holds(t, e.volumeFile(vol.VolumeId), data, 32<<20)

	// the same with the waiting done inside the call
	e.c.copies.waitMax = newCopyTracker(nil, discardLog, 1).waitMax // the default
	clone, err := e.c.CreateVolume(testCtx(t), fromVolume(createReq("pvc-clone", 32<<20), src.VolumeId))
	if err != nil {
		t.Fatalf("a clone waited for within the call: %v", err)
	}
	holds(t, e.volumeFile(clone.Volume.VolumeId), data, 32<<20)
}

// A restore cut off after its disk was made but before the grow is finished by the retry.
func TestRestoreInterruptedBeforeGrow(t *testing.T) {
	e := newCtrlEnv(t)
	src := e.mustCreate(createReq("pvc-src", 16<<20))
	data := fill(t, e.volumeFile(src.VolumeId), "grow")
	snap := e.mustSnapshot("snapshot-g", src.VolumeId)
	snapFile := strings.TrimPrefix(findSnapshotFile(t, e), "/")
	for _, cmd := range []string{
		`/file copy "` + snapFile + `" name="storage-pool/metal-csi/pvc-cut.img"`,
		`/disk add type=file file-path=/storage-pool/metal-csi/pvc-cut.img slot=pvc-cut nvme-tcp-export=yes nvme-tcp-server-port=4420 nvme-tcp-server-nqn="nqn.2000-02.com.mikrotik:pvc-cut" comment="rds-csi: copy of snapshot snapshot-g"`,
	} {
		if _, err := e.sim.Exec(context.Background(), cmd); err != nil {
			t.Fatal(err)
		}
	}
	vol := e.mustCreate(fromSnapshot(createReq("pvc-cut", 40<<20), snap.SnapshotId))
	if vol.CapacityBytes != 40<<20 || e.disk("pvc-cut").Size != 40<<20 {
		t.Errorf("the retry did not finish the grow: %+v", vol)
	}
	holds(t, e.volumeFile("pvc-cut"), data, 16<<20)
}

func findSnapshotFile(t testing.TB, e *ctrlEnv) string {
	t.Helper()
	files, err := os.ReadDir(e.sim.HostPath(testVolumePath + "/.snapshots"))
	if err != nil || len(files) != 1 {
		t.Fatalf("snapshot files %v, %v", files, err)
	}
	return testVolumePath + "/.snapshots/" + files[0].Name()
}

func TestCloneVolume(t *testing.T) {
	e := newCtrlEnv(t)
	src := e.mustCreate(createReq("pvc-golden", 32<<20))
	data := fill(t, e.volumeFile(src.VolumeId), "golden")

	clone := e.mustCreate(fromVolume(createReq("pvc-vm-1", 64<<20), src.VolumeId))
	if clone.CapacityBytes != 64<<20 || clone.ContentSource.GetVolume().GetVolumeId() != src.VolumeId {
		t.Errorf("clone %+v", clone)
	}
	holds(t, e.volumeFile(clone.VolumeId), data, 32<<20)
	writeSync(t, e.volumeFile(clone.VolumeId), []byte("the clone's own write"), 0)
	checkData(t, e.volumeFile(src.VolumeId), data[:64], 0)
	if again := e.mustCreate(fromVolume(createReq("pvc-vm-1", 64<<20), src.VolumeId)); again.VolumeId != clone.VolumeId {
		t.Errorf("retry %+v", again)
	}
	for _, tc := range []struct {
		name  string
		req   *csi.CreateVolumeRequest
		code  codes.Code
		parts []string
	}{
		{"missing source", fromVolume(createReq("pvc-x", 64<<20), "pvc-none"), codes.NotFound, []string{"volume pvc-none does not exist"}},
		{"smaller", fromVolume(createReq("pvc-x", 16<<20), src.VolumeId), codes.OutOfRange, []string{"volume pvc-golden holds 32 MiB"}},
		{"into itself", fromVolume(createReq("pvc-golden", 32<<20), src.VolumeId), codes.AlreadyExists, []string{"was not made from volume pvc-golden"}},
		{"same name, other source", fromVolume(createReq("pvc-vm-1", 64<<20), "pvc-other"), codes.AlreadyExists, []string{"was not made from volume pvc-other"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.c.CreateVolume(testCtx(t), tc.req)
			wantCode(t, err, tc.code, tc.parts...)
		})
	}
}

// While a copy command still reads a volume or snapshot, deleting that source is refused;
// the delete goes through once the copy is done.
func TestDeleteRefusedWhileCopying(t *testing.T) {
	e := newCtrlEnv(t)
	src := e.mustCreate(createReq("pvc-src", 16<<20))
	fill(t, e.volumeFile(src.VolumeId), "busy")
	snap := e.mustSnapshot("snapshot-b", src.VolumeId)
	e.c.copies.waitMax = 0

	hold := e.sim.Hang("/file copy")
	resp, err := e.c.CreateSnapshot(testCtx(t), snapReq("snapshot-held", src.VolumeId))
	if err != nil || resp.Snapshot.ReadyToUse {
		t.Fatalf("snapshot with its copy command held: %+v, %v; want not ready", resp, err)
	}
	if err := hold.Wait(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	_, err = e.c.DeleteVolume(testCtx(t), &csi.DeleteVolumeRequest{VolumeId: src.VolumeId})
	wantCode(t, err, codes.Aborted, "still being copied")
	_, err = e.c.CreateVolume(testCtx(t), fromSnapshot(createReq("pvc-r", 16<<20), snap.SnapshotId))
	wantCode(t, err, codes.Aborted, "the copy command has not created the file yet")
	_, err = e.c.DeleteSnapshot(testCtx(t), &csi.DeleteSnapshotRequest{SnapshotId: snap.SnapshotId})
	wantCode(t, err, codes.Aborted, "still being copied into")

	hold.Release()
	e.mustSnapshot("snapshot-held", src.VolumeId)
	e.mustCreateEventually(fromSnapshot(createReq("pvc-r", 16<<20), snap.SnapshotId))
	if _, err := e.c.DeleteSnapshot(testCtx(t), &csi.DeleteSnapshotRequest{SnapshotId: snap.SnapshotId}); err != nil {
		t.Errorf("DeleteSnapshot after the copy: %v", err)
	}
	if _, err := e.c.DeleteVolume(testCtx(t), &csi.DeleteVolumeRequest{VolumeId: src.VolumeId}); err != nil {
		t.Errorf("DeleteVolume after the copy: %v", err)
	}
}

// A copy that fails (pool full) reports ResourceExhausted and leaves no partial file; the
// retry, with space again, copies afresh.
func TestCopyFailureLeavesNothing(t *testing.T) {
	e := newCtrlEnv(t)
	src := e.mustCreate(createReq("pvc-src", 16<<20))
	data := fill(t, e.volumeFile(src.VolumeId), "full")
	snap := e.mustSnapshot("snapshot-f", src.VolumeId)

	e.sim.SetDiskFull(true)
	_, err := e.c.CreateSnapshot(testCtx(t), snapReq("snapshot-full", src.VolumeId))
	wantCode(t, err, codes.ResourceExhausted, "snapshot snapshot-full", "free")
	_, err = e.c.CreateVolume(testCtx(t), fromSnapshot(createReq("pvc-full", 16<<20), snap.SnapshotId))
	wantCode(t, err, codes.ResourceExhausted, "create volume pvc-full from snapshot snapshot-f")
	if files, _ := os.ReadDir(e.sim.HostPath(testVolumePath + "/.snapshots")); len(files) != 1 {
		t.Errorf("snapshot files after a failed copy: %v", files)
	}
	if fileExists(t, e.volumeFile("pvc-full")) || e.disk("pvc-full") != nil {
		t.Error("a failed restore left its file or disk")
	}

	e.sim.SetDiskFull(false)
	e.mustSnapshot("snapshot-full", src.VolumeId)
	vol := e.mustCreate(fromSnapshot(createReq("pvc-full", 16<<20), snap.SnapshotId))
	holds(t, e.volumeFile(vol.VolumeId), data, 16<<20)
}

// A copy whose writer died (here: a partial file left by a previous process) is noticed
// after the stall time and made again.
func TestStalledCopyIsRedone(t *testing.T) {
	e := newCtrlEnv(t)
	src := e.mustCreate(createReq("pvc-src", 16<<20))
	data := fill(t, e.volumeFile(src.VolumeId), "stall")
	snap := e.mustSnapshot("snapshot-s", src.VolumeId)
	// what a dead copy leaves: the restore's file, 4 MiB of 16 written
	partial := e.volumeFile("pvc-stalled")
	writeSync(t, partial, data[:4096], 0)
	if err := os.Truncate(partial, 4<<20); err != nil {
		t.Fatal(err)
	}

	e.c.copies.waitMax, e.c.copies.stall = 0, 300*time.Millisecond
	req := fromSnapshot(createReq("pvc-stalled", 16<<20), snap.SnapshotId)
	_, err := e.c.CreateVolume(testCtx(t), req)
	wantCode(t, err, codes.Aborted, "4096.0KiB of 16 MiB written")
	time.Sleep(400 * time.Millisecond)
	vol, _ := e.mustCreateEventually(req)
	holds(t, e.volumeFile(vol.VolumeId), data, 16<<20)
}

// A retried CreateSnapshot while the first copy command has not created its file yet (held
// on a slow RDS) must follow that copy, not start another: in a later second that would
// be a second, duplicate snapshot file.
func TestSnapshotRetryFollowsTheCopyInFlight(t *testing.T) {
	e := newCtrlEnv(t)
	src := e.mustCreate(createReq("pvc-src", 16<<20))
	fill(t, e.volumeFile(src.VolumeId), "slow")
	e.c.copies.waitMax = 0
	hold := e.sim.Hang("/file copy")
	first, err := e.c.CreateSnapshot(testCtx(t), snapReq("snapshot-slow", src.VolumeId))
	if err != nil || first.Snapshot.ReadyToUse {
		t.Fatalf("first CreateSnapshot: %+v, %v; want not ready", first, err)
	}
	if err := hold.Wait(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1100 * time.Millisecond) // a new second: a new snapshot would get a new file name
	again, err := e.c.CreateSnapshot(testCtx(t), snapReq("snapshot-slow", src.VolumeId))
	if err != nil || again.Snapshot.ReadyToUse || again.Snapshot.SnapshotId != first.Snapshot.SnapshotId {
		t.Fatalf("retried CreateSnapshot: %+v, %v; want the same snapshot, not ready", again, err)
	}
	copies := 0
	for _, c := range e.sim.Commands() {
		if strings.HasPrefix(c, "/file copy") {
			copies++
		}
	}
	if copies != 1 {
		t.Fatalf("%d copy commands for one snapshot, want 1", copies)
	}
	hold.Release()
	e.mustSnapshot("snapshot-slow", src.VolumeId)
	if files, _ := os.ReadDir(e.sim.HostPath(testVolumePath + "/.snapshots")); len(files) != 1 {
		t.Fatalf("snapshot files: %v, want exactly one", files)
	}
}

// quickCopies shortens the copy timing for tests. The simulator's copies grow their file
// and reach the full size only when complete, so a short settle is still right there; the
// tests of preallocating copies set a settle that spans last-modified's one-second ticks.
func quickCopies(t *copyTracker) {
	t.settle, t.poll, t.margin = 20*time.Millisecond, 5*time.Millisecond, 100*time.Millisecond
}
