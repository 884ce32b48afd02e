package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"srvlab.io/rds-csi/routeros"
)

// A snapshot is a copy of its volume's backing file in the .snapshots directory beside it,
// named <snapshot-id>_<source-volume-id>_<size-bytes>_<unix-seconds>.img. The name carries
// everything the CSI calls need — the ID, the source, the exact size (RouterOS prints file
// sizes rounded) and the creation time (last-modified moves while a copy is written, and
// the RDS prints no zone) — so the snapshots are recovered from the RDS alone after a
// controller restart, also once their source volume is gone. A snapshot is never a /disk
// item and never exported: nothing can write to it.
const snapshotDirName = ".snapshots"

// snapshotIDFor maps a CreateSnapshot name to the snapshot ID, as volumeIDFor does for
// volumes: the external-snapshotter's snapshot-<uuid> is used as it is, any other name
// maps to "snap-" and 96 bits of its SHA-256. Snapshot IDs have the form of volume IDs.
func snapshotIDFor(name string) string { return idFor(name, "snap-") }

// snapshotLockKey is the lock of a snapshot ID in volumeLocks; ':' never occurs in a
// volume ID, so the keys cannot collide.
func snapshotLockKey(id string) string { return "snapshot:" + id }

// busySnapshot is Aborted while another operation holds the snapshot ID.
func busySnapshot(id string) error {
	return status.Errorf(codes.Aborted, "an operation on snapshot %s is already in progress; retry when it has finished", id)
}

// snapshot is one snapshot as its file on the RDS describes it.
type snapshot struct {
	id, source string
	size       int64
	created    time.Time
	file       routeros.File // as listed: path, printed size, last-modified
}

// snapshotPath is the file of a new snapshot of a volume whose file lies in volumeDir.
func snapshotPath(volumeDir, id, source string, size int64, created time.Time) string {
	return path.Join(volumeDir, snapshotDirName, fmt.Sprintf("%s_%s_%d_%d.img", id, source, size, created.Unix()))
}

// parseSnapshot reads a listed file as a snapshot; ok is false for anything else.
func parseSnapshot(f routeros.File) (s snapshot, ok bool) {
	dir, name := path.Split(f.Path)
	stem, isImg := strings.CutSuffix(name, ".img")
	parts := strings.Split(stem, "_")
	if f.Type == "directory" || path.Base(dir) != snapshotDirName || !isImg || len(parts) != 4 ||
		!isVolumeID(parts[0]) || !isVolumeID(parts[1]) {
		return snapshot{}, false
	}
	size, err1 := strconv.ParseInt(parts[2], 10, 64)
	secs, err2 := strconv.ParseInt(parts[3], 10, 64)
	if err1 != nil || err2 != nil || size <= 0 || secs <= 0 ||
		strconv.FormatInt(size, 10) != parts[2] || strconv.FormatInt(secs, 10) != parts[3] {
		return snapshot{}, false
	}
	return snapshot{id: parts[0], source: parts[1], size: size, created: time.Unix(secs, 0).UTC(), file: f}, true
}

// listSnapshots returns every snapshot below the volume directories, sorted by ID and
// then path (one ID has one file unless something went wrong).
func (c *controllerService) listSnapshots(ctx context.Context) ([]snapshot, error) {
	files, err := c.baseFiles(ctx, "list the snapshots")
	if err != nil {
		return nil, err
	}
	// A copy this process started may not have created its file when the RDS was listed:
	// it is a snapshot all the same (CreateSnapshot answered for it). Without this a retry
	// would start a second copy, and a listing would miss a snapshot it was just told of.
	for _, dst := range c.copies.inFlight() {
		if !slices.ContainsFunc(files, func(f routeros.File) bool { return f.Path == dst }) {
			files = append(files, routeros.File{Path: dst})
		}
	}
	var found []snapshot
	for _, f := range files {
		if s, ok := parseSnapshot(f); ok {
			found = append(found, s)
		}
	}
	slices.SortFunc(found, func(a, b snapshot) int {
		return cmp.Or(strings.Compare(a.id, b.id), strings.Compare(a.file.Path, b.file.Path))
	})
	return found, nil
}

// findSnapshot returns the files of snapshot id (none when it does not exist).
func (c *controllerService) findSnapshot(ctx context.Context, id string) ([]snapshot, error) {
	if !isVolumeID(id) {
		return nil, nil
	}
	all, err := c.listSnapshots(ctx)
	return slices.DeleteFunc(all, func(s snapshot) bool { return s.id != id }), err
}

func snapshotInfo(s snapshot, ready bool) *csi.Snapshot {
	return &csi.Snapshot{
		SnapshotId: s.id, SourceVolumeId: s.source, SizeBytes: s.size,
		CreationTime: timestamppb.New(s.created), ReadyToUse: ready,
	}
}

// CreateSnapshot copies the source volume's file into <volumePath>/.snapshots/ (see
// snapshotPath). It answers ready_to_use=false while the copy runs and true once the copy
// is confirmed complete (see copyTracker); the CO calls again until then. It is idempotent
// by name: the same name and source find the same snapshot, the same name with another
// source is AlreadyExists.
//
// Consistency: the copy is of the file as the RDS holds it. A reflink copy is atomic and
// crash-consistent (as if the power had been pulled); a byte copy of a volume that is
// written meanwhile is not even that, as blocks are read at different times. Snapshot a
// volume while its writers are frozen or stopped (KubeVirt freezes a VM's file systems
// for a VirtualMachineSnapshot) for an image an application can rely on.
func (c *controllerService) CreateSnapshot(ctx context.Context, req *csi.CreateSnapshotRequest) (*csi.CreateSnapshotResponse, error) {
	name, source := req.GetName(), req.GetSourceVolumeId()
	switch {
	case name == "":
		return nil, required("name", "CreateSnapshot")
	case source == "":
		return nil, required("source_volume_id", "CreateSnapshot")
	}
	// VolumeSnapshotClass parameters are not used; the sidecar's own are ignored.
	if unknown := slices.DeleteFunc(slices.Sorted(maps.Keys(req.GetParameters())), func(k string) bool {
		return strings.HasPrefix(k, reservedParamPrefix)
	}); len(unknown) > 0 {
		return nil, status.Errorf(codes.InvalidArgument, "unknown VolumeSnapshotClass parameters %s: rds-csi snapshots take none; remove them", strings.Join(unknown, ", "))
	}
	id := snapshotIDFor(name)
	release, ok := c.locks.tryLock(snapshotLockKey(id))
	if !ok {
		return nil, busySnapshot(id)
	}
	defer release()
	existing, err := c.findSnapshot(ctx, id)
	if err != nil {
		return nil, err
	}
	if i := slices.IndexFunc(existing, func(s snapshot) bool { return s.source != source }); i >= 0 {
		return nil, status.Errorf(codes.AlreadyExists, "snapshot %s (name %q) already exists, of volume %s; this request asks for a snapshot of volume %s: use another name or delete the existing snapshot",
			id, name, existing[i].source, source)
	}
	if len(existing) > 0 {
		s := existing[0]
		st, err := c.awaitCopy(ctx, s.file.Path, s.size)
		switch {
		case err != nil:
			return nil, c.rdsStatus("check snapshot "+id, err)
		case st.phase == copyFailed:
			return nil, c.copyFailure(ctx, "snapshot "+id+" of volume "+source, s.file.Path, path.Dir(s.file.Path), s.size, st.err)
		case st.phase == copyDone || st.phase == copyRunning:
			return &csi.CreateSnapshotResponse{Snapshot: snapshotInfo(s, st.phase == copyDone)}, nil
		case st.phase == copyStalled:
			c.log.Warn("the copy of a snapshot stopped before it was complete; taking the snapshot again", "snapshot_id", id, "state", st.detail)
			if err := c.client.RemoveFile(ctx, s.file.Path); err != nil {
				return nil, c.rdsStatus("snapshot "+id+": remove its incomplete copy "+s.file.Path, err)
			}
			c.copies.forget(s.file.Path)
		}
		// absent (removed meanwhile) or stalled: take it anew
	}
	return c.newSnapshot(ctx, id, source)
}

// newSnapshot starts the copy of a new snapshot and waits for it within the RPC's time.
func (c *controllerService) newSnapshot(ctx context.Context, id, source string) (*csi.CreateSnapshotResponse, error) {
	releaseSource, ok := c.locks.tryLock(source)
	if !ok {
		return nil, busy(source)
	}
	disk, err := c.lookupVolume(ctx, source, "snapshot volume "+source)
	if err != nil {
		releaseSource()
		return nil, err
	}
	s := snapshot{id: id, source: source, size: disk.Size, created: time.Now().UTC().Truncate(time.Second)}
	s.file.Path = snapshotPath(path.Dir(disk.FilePath), id, source, disk.Size, s.created)
	c.copies.start(disk.FilePath, s.file.Path)
	// Held until the command is registered: a delete or resize of the source waits for it.
	releaseSource()

	st, err := c.awaitCopy(ctx, s.file.Path, s.size)
	switch {
	case err != nil:
		return nil, c.rdsStatus("snapshot "+id+": check its copy", err)
	case st.phase == copyFailed:
		return nil, c.copyFailure(ctx, fmt.Sprintf("snapshot %s of volume %s (%s)", id, source, humanBytes(s.size)), s.file.Path, path.Dir(disk.FilePath), s.size, st.err)
	case st.phase == copyAbsent:
		return nil, status.Errorf(codes.Aborted, "snapshot %s: its copy %s disappeared from the RDS while it was made; retry", id, s.file.Path)
	}
	return &csi.CreateSnapshotResponse{Snapshot: snapshotInfo(s, st.phase == copyDone)}, nil
}

// DeleteSnapshot removes the snapshot's file, nothing else. It is idempotent; a snapshot
// still being copied into a new volume is refused until that copy has finished.
func (c *controllerService) DeleteSnapshot(ctx context.Context, req *csi.DeleteSnapshotRequest) (*csi.DeleteSnapshotResponse, error) {
	id := req.GetSnapshotId()
	if id == "" {
		return nil, required("snapshot_id", "DeleteSnapshot")
	}
	release, ok := c.locks.tryLock(snapshotLockKey(id))
	if !ok {
		return nil, busySnapshot(id)
	}
	defer release()
	snaps, err := c.findSnapshot(ctx, id)
	if err != nil {
		return nil, err
	}
	for _, s := range snaps {
		if dst := c.copies.copyingFrom(s.file.Path); dst != "" {
			return nil, status.Errorf(codes.Aborted, "snapshot %s is still being copied into %s (a volume restored from it); retry when that has finished", id, dst)
		}
		if err := c.client.RemoveFile(ctx, s.file.Path); err != nil {
			return nil, c.rdsStatus("delete snapshot "+id+": remove its file "+s.file.Path, err)
		}
		c.copies.forget(s.file.Path)
	}
	return &csi.DeleteSnapshotResponse{}, nil
}

// ListSnapshots lists snapshots by ID, by source volume, or all, in ID order; the token is
// the last ID returned. ready_to_use is judged as in CreateSnapshot; a snapshot this
// process has not confirmed yet (after a restart) is looked at twice, settle apart, when
// the RPC's time allows, so a listing is not needlessly "not ready".
func (c *controllerService) ListSnapshots(ctx context.Context, req *csi.ListSnapshotsRequest) (*csi.ListSnapshotsResponse, error) {
	after, err := decodeListToken(req.GetStartingToken(), req.GetMaxEntries())
	if err != nil {
		return nil, err
	}
	began := c.copies.now()
	for {
		asked := c.copies.now()
		snaps, err := c.listSnapshots(ctx)
		if err != nil {
			return nil, err
		}
		snaps = slices.DeleteFunc(snaps, func(s snapshot) bool {
			return req.GetSnapshotId() != "" && s.id != req.GetSnapshotId() ||
				req.GetSourceVolumeId() != "" && s.source != req.GetSourceVolumeId()
		})
		snaps = slices.CompactFunc(snaps, func(a, b snapshot) bool { return a.id == b.id })
		resp := &csi.ListSnapshotsResponse{}
		snaps, resp.NextToken = page(snaps, func(s snapshot) string { return s.id }, after, req.GetMaxEntries())
		var recheck time.Time
		for _, s := range snaps {
			st := c.copies.state(s.file.Path, &s.file, s.size, asked)
			resp.Entries = append(resp.Entries, &csi.ListSnapshotsResponse_Entry{Snapshot: snapshotInfo(s, st.phase == copyDone)})
			if st.recheck.After(recheck) {
				recheck = st.recheck
			}
		}
		if recheck.IsZero() || !c.copies.mayWait(ctx, began, recheck) {
			return resp, nil
		}
		select {
		case <-time.After(time.Until(recheck)):
		case <-ctx.Done():
			return resp, nil
		}
	}
}

// GetSnapshot returns one snapshot, or NotFound.
func (c *controllerService) GetSnapshot(ctx context.Context, req *csi.GetSnapshotRequest) (*csi.GetSnapshotResponse, error) {
	id := req.GetSnapshotId()
	if id == "" {
		return nil, required("snapshot_id", "GetSnapshot")
	}
	snaps, err := c.findSnapshot(ctx, id)
	if err != nil {
		return nil, err
	}
	if len(snaps) == 0 {
		return nil, status.Errorf(codes.NotFound, "snapshot %s does not exist", id)
	}
	st, err := c.awaitCopy(ctx, snaps[0].file.Path, snaps[0].size)
	if err != nil {
		return nil, c.rdsStatus("check snapshot "+id, err)
	}
	return &csi.GetSnapshotResponse{Snapshot: snapshotInfo(snaps[0], st.phase == copyDone)}, nil
}

// copyState reads dst once and judges its copy (a nil file: there is none yet).
func (c *controllerService) copyState(ctx context.Context, dst string, want int64) (copyState, error) {
	asked := c.copies.now()
	f, err := c.client.GetFile(ctx, dst)
	switch {
	case errors.Is(err, routeros.ErrNotFound):
		f = nil
	case err != nil:
		return copyState{}, err
	}
	return c.copies.state(dst, f, want, asked), nil
}

// awaitCopy follows the copy into dst until it is no longer running, or until the RPC
// must answer (see copyTracker.mayWait); the state then says which.
func (c *controllerService) awaitCopy(ctx context.Context, dst string, want int64) (copyState, error) {
	began := c.copies.now()
	for {
		st, err := c.copyState(ctx, dst, want)
		if err != nil || st.phase != copyRunning {
			return st, err
		}
		next := st.recheck
		if next.IsZero() {
			next = c.copies.now().Add(c.copies.poll)
		}
		if !c.copies.mayWait(ctx, began, next) {
			return st, nil
		}
		timer := time.NewTimer(time.Until(next))
		select {
		case <-timer.C:
		case <-c.copies.finishedCh(dst):
		case <-ctx.Done():
		}
		timer.Stop()
		if ctx.Err() != nil {
			return st, nil
		}
	}
}

// copyFailure cleans up after a copy command that failed — the partial file is removed,
// so the retry copies afresh — and says what went wrong. `what` names the operation,
// `dir` is where space ran out and `need` the bytes the copy needed.
func (c *controllerService) copyFailure(ctx context.Context, what, dst, dir string, need int64, cause error) error {
	if errors.Is(cause, routeros.ErrAlreadyExists) {
		// something made the file before the command ran: follow it on the retry
		return status.Errorf(codes.Aborted, "%s: %s appeared on the RDS while the copy started (%v); retry", what, dst, cause)
	}
	if err := c.client.RemoveFile(ctx, dst); err != nil {
		c.log.Warn("cannot remove the partial copy; the retry removes it", "file", dst, "err", err)
	}
	c.copies.forget(dst)
	if errors.Is(cause, routeros.ErrNoSpace) {
		return c.noSpaceStatus(ctx, what, dir, need, cause)
	}
	return c.rdsStatus(what+": the copy failed and is started again on the retry", cause)
}
