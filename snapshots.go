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

// A snapshot is a copy of its volume's file in the .snapshots directory beside it, named
// <snapshot-id>_<source-volume-id>_<size-bytes>_<unix-seconds>.img. The name carries all
// the CSI calls need (RouterOS prints sizes rounded, last-modified moves while a copy is
// written, and the RDS prints no zone), so snapshots are recovered from the RDS alone after
// a restart, also once their source is gone. A snapshot is never a disk: nothing writes it.
const snapshotDirName = ".snapshots"

// snapshotIDFor maps a CreateSnapshot name to the snapshot ID as volumeIDFor does, with
// the prefix "snap-"; snapshot IDs have the form of volume IDs.
func snapshotIDFor(name string) string { return idFor(name, "snap-") }

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

// listSnapshots returns every snapshot below the volume directories, by ID and then path.
func (c *controllerService) listSnapshots(ctx context.Context) ([]snapshot, error) {
	files, err := c.baseFiles(ctx, "list the snapshots")
	if err != nil {
		return nil, err
	}
	// A copy this process started may not have created its file yet: it is a snapshot all
	// the same, or a retry would start a second copy and a listing miss what was answered.
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

// getSnapshot finds snapshot id (NotFound when there is none) and follows its copy.
func (c *controllerService) getSnapshot(ctx context.Context, id string) (snapshot, copyState, error) {
	snaps, err := c.findSnapshot(ctx, id)
	switch {
	case err != nil:
		return snapshot{}, copyState{}, err
	case len(snaps) == 0:
		return snapshot{}, copyState{}, status.Errorf(codes.NotFound, "snapshot %s does not exist", id)
	}
	st, err := c.snapshotState(ctx, snaps[0])
	return snaps[0], st, err
}

func (c *controllerService) snapshotState(ctx context.Context, s snapshot) (copyState, error) {
	st, err := c.awaitCopy(ctx, s.file.Path, s.size)
	if err != nil {
		return st, c.rdsStatus("check snapshot "+s.id, err)
	}
	return st, nil
}

func snapshotInfo(s snapshot, st copyState) *csi.Snapshot {
	return &csi.Snapshot{SnapshotId: s.id, SourceVolumeId: s.source, SizeBytes: s.size,
		CreationTime: timestamppb.New(s.created), ReadyToUse: st.phase == copyDone}
}

// CreateSnapshot copies the source volume's file (see snapshotPath), answering
// ready_to_use=false while the copy runs and true once it is confirmed complete (see
// copyTracker). Idempotent by name; the same name with another source is AlreadyExists.
//
// The copy is of the file as the RDS holds it: a reflink copy is crash-consistent, a byte
// copy of a volume written meanwhile is not even that. Freeze or stop the writers (KubeVirt
// freezes a VM's file systems for a VirtualMachineSnapshot) for an image one can rely on.
func (c *controllerService) CreateSnapshot(ctx context.Context, req *csi.CreateSnapshotRequest) (*csi.CreateSnapshotResponse, error) {
	name, source := req.GetName(), req.GetSourceVolumeId()
	if err := requireAll("CreateSnapshot", "name", name, "source_volume_id", source); err != nil {
		return nil, err
	}
	if unknown := slices.DeleteFunc(slices.Sorted(maps.Keys(req.GetParameters())), func(k string) bool {
		return strings.HasPrefix(k, reservedParamPrefix) // the sidecar's own
	}); len(unknown) > 0 {
		return nil, status.Errorf(codes.InvalidArgument, "unknown VolumeSnapshotClass parameters %s: rds-csi snapshots take none; remove them", strings.Join(unknown, ", "))
	}
	id := snapshotIDFor(name)
	release, err := c.lock("snapshot", id)
	if err != nil {
		return nil, err
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
		st, err := c.snapshotState(ctx, s)
		switch {
		case err != nil:
			return nil, err
		case st.phase == copyFailed:
			return nil, c.copyFailure(ctx, "snapshot "+id+" of volume "+source, s.file.Path, path.Dir(s.file.Path), s.size, st.err)
		case st.phase == copyDone || st.phase == copyRunning:
			return &csi.CreateSnapshotResponse{Snapshot: snapshotInfo(s, st)}, nil
		case st.phase == copyStalled:
			c.log.Warn("the copy of a snapshot stopped before it was complete; taking the snapshot again", "snapshot_id", id, "state", st.detail)
			if err := c.client.RemoveFile(ctx, s.file.Path); err != nil {
				return nil, c.rdsStatus("snapshot "+id+": remove its incomplete copy "+s.file.Path, err)
			}
			c.copies.forget(s.file.Path)
		} // absent (removed meanwhile) or stalled: take it anew
	}
	return c.newSnapshot(ctx, id, source)
}

// newSnapshot starts the copy of a new snapshot and waits for it within the RPC's time.
func (c *controllerService) newSnapshot(ctx context.Context, id, source string) (*csi.CreateSnapshotResponse, error) {
	disk, releaseSource, err := c.lockVolume(ctx, source, "snapshot volume "+source)
	if err != nil {
		return nil, err
	}
	s := snapshot{id: id, source: source, size: disk.Size, created: time.Now().UTC().Truncate(time.Second)}
	s.file.Path = snapshotPath(path.Dir(disk.FilePath), id, source, disk.Size, s.created)
	c.copies.start(disk.FilePath, s.file.Path)
	releaseSource() // held until the copy is registered: a delete or resize of the source waits
	st, err := c.awaitCopy(ctx, s.file.Path, s.size)
	switch {
	case err != nil:
		return nil, c.rdsStatus("snapshot "+id+": check its copy", err)
	case st.phase == copyFailed:
		return nil, c.copyFailure(ctx, fmt.Sprintf("snapshot %s of volume %s (%s)", id, source, humanBytes(s.size)), s.file.Path, path.Dir(disk.FilePath), s.size, st.err)
	case st.phase == copyAbsent:
		return nil, status.Errorf(codes.Aborted, "snapshot %s: its copy %s disappeared from the RDS while it was made; retry", id, s.file.Path)
	}
	return &csi.CreateSnapshotResponse{Snapshot: snapshotInfo(s, st)}, nil
}

// DeleteSnapshot removes the snapshot's file, nothing else; idempotent. A snapshot still
// being copied into a new volume is refused until that copy has finished.
func (c *controllerService) DeleteSnapshot(ctx context.Context, req *csi.DeleteSnapshotRequest) (*csi.DeleteSnapshotResponse, error) {
	id := req.GetSnapshotId()
	if id == "" {
		return nil, required("snapshot_id", "DeleteSnapshot")
	}
	release, err := c.lock("snapshot", id)
	if err != nil {
		return nil, err
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

// ListSnapshots lists snapshots by ID, by source volume, or all, in ID order. A snapshot
// this process has not confirmed yet (after a restart) is looked at twice, settle apart,
// when the RPC's time allows, so a listing is not needlessly "not ready".
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
			resp.Entries = append(resp.Entries, &csi.ListSnapshotsResponse_Entry{Snapshot: snapshotInfo(s, st)})
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
	if req.GetSnapshotId() == "" {
		return nil, required("snapshot_id", "GetSnapshot")
	}
	s, st, err := c.getSnapshot(ctx, req.GetSnapshotId())
	if err != nil {
		return nil, err
	}
	return &csi.GetSnapshotResponse{Snapshot: snapshotInfo(s, st)}, nil
}

// copyState reads dst once and judges its copy.
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
// must answer (copyTracker.mayWait).
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

// copyFailure removes the partial file of a failed copy command, so the retry copies
// afresh, and says what went wrong; dir is where space ran out, need what the copy needed.
func (c *controllerService) copyFailure(ctx context.Context, what, dst, dir string, need int64, cause error) error {
	if errors.Is(cause, routeros.ErrAlreadyExists) { // made before the command ran: followed on the retry
		return status.Errorf(codes.Aborted, "%s: %s appeared on the RDS while the copy started (%v); retry", what, dst, cause)
	}
	if err := c.client.RemoveFile(ctx, dst); err != nil {
		c.log.Warn("cannot remove the partial copy; the retry removes it", "file", dst, "err", err)
	}
	c.copies.forget(dst)
	return c.spaceStatus(ctx, what, ": the copy failed and is started again on the retry", dir, need, cause)
}
