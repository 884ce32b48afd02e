package main

import (
	"context"
	"errors"
	"fmt"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

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

// derivedSnapshotIDPrefix starts snapshot IDs derived from names that cannot be IDs.
const derivedSnapshotIDPrefix = "snap-"

// snapshotIDFor maps a CreateSnapshot name to the snapshot ID, as volumeIDFor does for
// volumes: the external-snapshotter's snapshot-<uuid> is used as it is, any other name
// maps to "snap-" and 96 bits of its SHA-256, so a retry finds the same snapshot.
func snapshotIDFor(name string) string { return idFor(name, derivedSnapshotIDPrefix) }

// isSnapshotID: snapshot IDs have the form of volume IDs ([a-z0-9-], at most 63), so they
// fit a file name and the list token. Any other ID names no snapshot.
func isSnapshotID(id string) bool { return isVolumeID(id) }

// snapshotLockKey is the lock of a snapshot ID in volumeLocks; ':' never occurs in a
// volume ID, so the keys cannot collide.
func snapshotLockKey(id string) string { return "snapshot:" + id }

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
		!isSnapshotID(parts[0]) || !isVolumeID(parts[1]) {
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
	var found []snapshot
	seen := map[string]bool{} // nested bases list the same files
	for _, b := range c.bases {
		files, err := c.client.ListFiles(ctx, b)
		if err != nil {
			return nil, c.rdsStatus("list the snapshots in "+b, err)
		}
		for _, f := range files {
			if s, ok := parseSnapshot(f); ok && !seen[f.Path] {
				seen[f.Path] = true
				found = append(found, s)
			}
		}
	}
	// A copy this process started may not have created its file when the RDS was listed:
	// it is a snapshot all the same (CreateSnapshot answered for it). Without this a retry
	// would start a second copy, and a listing would miss a snapshot it was just told of.
	for _, dst := range c.copies.inFlight() {
		if s, ok := parseSnapshot(routeros.File{Path: dst}); ok && !seen[dst] {
			seen[dst] = true
			found = append(found, s)
		}
	}
	slices.SortFunc(found, func(a, b snapshot) int {
		if n := strings.Compare(a.id, b.id); n != 0 {
			return n
		}
		return strings.Compare(a.file.Path, b.file.Path)
	})
	return found, nil
}

// findSnapshot returns the files of snapshot id (none when it does not exist).
func (c *controllerService) findSnapshot(ctx context.Context, id string) ([]snapshot, error) {
	if !isSnapshotID(id) {
		return nil, nil
	}
	all, err := c.listSnapshots(ctx)
	if err != nil {
		return nil, err
	}
	return slices.DeleteFunc(all, func(s snapshot) bool { return s.id != id }), nil
}

// contentSource is what a new volume is copied from: a snapshot or another volume.
type contentSource struct {
	kind string // "snapshot" or "volume"
	id   string
}

func sourceOf(cs *csi.VolumeContentSource) (contentSource, error) {
	var s contentSource
	switch t := cs.GetType().(type) {
	case *csi.VolumeContentSource_Snapshot:
		s = contentSource{"snapshot", t.Snapshot.GetSnapshotId()}
	case *csi.VolumeContentSource_Volume:
		s = contentSource{"volume", t.Volume.GetVolumeId()}
	default:
		return s, status.Error(codes.InvalidArgument, "volume_content_source names neither a snapshot nor a volume")
	}
	if s.id == "" {
		return s, required("volume_content_source."+s.kind+" ID", "CreateVolume")
	}
	if !isVolumeID(s.id) { // snapshot IDs have the same form
		return s, status.Errorf(codes.NotFound, "source %s %s does not exist: it is not an ID this driver makes", s.kind, s.id)
	}
	return s, nil
}

// comment is recorded on the new volume's disk, so a retry can tell a volume made from
// this source from one made otherwise.
func (s contentSource) comment() string { return "rds-csi: copy of " + s.kind + " " + s.id }

func (s contentSource) String() string { return s.kind + " " + s.id }

// copySource is a resolved source: its file and exact size.
type copySource struct {
	contentSource
	file string
	size int64
}

// createFromSource makes volume id a copy of a snapshot (restore) or of a volume (clone):
// the source's file is copied to the volume's file, and only once the copy is confirmed
// complete (see copyTracker) is the exported disk created on it, then grown to the size
// asked for. While the copy runs the answer is Aborted, which the provisioner retries; a
// half-copied volume is never exported. It is idempotent like CreateVolume: a retry
// follows the running copy, or finds the disk (growing it when a retry was cut off before
// the grow).
//
// The caller holds the volume's lock and has validated the capacity range.
func (c *controllerService) createFromSource(ctx context.Context, req *csi.CreateVolumeRequest, id string, params *volumeParams, minimum int64) (*csi.CreateVolumeResponse, error) {
	src, err := sourceOf(req.GetVolumeContentSource())
	if err != nil {
		return nil, err
	}
	dst := path.Join(params.volumePath, volumeFileName(id))
	disk, err := c.client.GetDisk(ctx, id)
	switch {
	case err == nil:
		return c.existingCopy(ctx, req, disk, dst, params, src, minimum)
	case !errors.Is(err, routeros.ErrNotFound):
		return nil, c.rdsStatus("create volume "+id, err)
	}
	what := fmt.Sprintf("create volume %s from %s", id, src)
	from, size, err := c.startVolumeCopy(ctx, src, id, dst, req.GetCapacityRange(), minimum)
	if err != nil {
		return nil, err
	}
	st, err := c.awaitCopy(ctx, dst, from.size)
	switch {
	case err != nil:
		return nil, c.rdsStatus(what+": check the copy", err)
	case st.phase == copyFailed:
		return nil, c.copyFailure(ctx, what, dst, params.volumePath, from.size, st.err)
	case st.phase == copyAbsent:
		return nil, status.Errorf(codes.Aborted, "%s: the copy %s disappeared from the RDS; retry", what, dst)
	case st.phase != copyDone:
		return nil, status.Errorf(codes.Aborted, "%s: copying %s into %s: %s; the volume is created when the copy is complete, retry", what, from.file, dst, st.detail)
	}

	disk, err = c.client.CreateDisk(ctx, routeros.CreateDiskRequest{
		Slot: id, FilePath: dst, Port: params.ints[paramNVMePort], NQN: defaultNQN(id), Comment: src.comment(),
	})
	switch {
	case errors.Is(err, routeros.ErrAlreadyExists):
		if disk, err = c.client.GetDisk(ctx, id); err == nil {
			return c.existingCopy(ctx, req, disk, dst, params, src, minimum)
		}
		return nil, c.rdsStatus(what, err)
	case err != nil:
		return nil, c.rdsStatus(what+": create its disk on the copied file "+dst, err)
	}
	c.copies.forget(dst) // a volume's file from now on: written, never judged as a copy again
	if disk.Size < size {
		if disk, err = c.growCopy(ctx, id, size, dst); err != nil {
			return nil, err
		}
	}
	return copyResponse(req, disk, params), nil
}

// startVolumeCopy resolves the source, checks the size asked for against it, and starts
// the copy into dst unless it runs already. It holds the source's lock meanwhile, so the
// source is neither deleted nor resized between being read and the copy starting. It
// returns the source and the size the new volume gets.
func (c *controllerService) startVolumeCopy(ctx context.Context, src contentSource, id, dst string, cr *csi.CapacityRange, minimum int64) (copySource, int64, error) {
	from, release, err := c.resolveSource(ctx, src, id)
	if err != nil {
		return from, 0, err
	}
	defer release()
	size, err := copySize(cr, minimum, from)
	if err != nil {
		return from, 0, err
	}
	st, err := c.startCopy(ctx, from.file, dst, from.size)
	switch {
	case err != nil:
		return from, 0, c.rdsStatus(fmt.Sprintf("create volume %s from %s: start the copy", id, src), err)
	case st.phase == copyFailed:
		return from, 0, c.copyFailure(ctx, fmt.Sprintf("create volume %s from %s", id, src), dst, path.Dir(dst), from.size, st.err)
	}
	return from, size, nil
}

// resolveSource finds the source's file and size and takes its lock. A snapshot must be
// complete to be copied.
func (c *controllerService) resolveSource(ctx context.Context, src contentSource, id string) (copySource, func(), error) {
	from := copySource{contentSource: src}
	if src.kind == "volume" {
		if src.id == id {
			return from, nil, status.Errorf(codes.InvalidArgument, "volume %s cannot be cloned into itself", id)
		}
		release, ok := c.locks.tryLock(src.id)
		if !ok {
			return from, nil, busy(src.id)
		}
		disk, err := c.lookupVolume(ctx, src.id, "clone volume "+src.id)
		if err != nil {
			release()
			return from, nil, err
		}
		from.file, from.size = disk.FilePath, disk.Size
		return from, release, nil
	}
	release, ok := c.locks.tryLock(snapshotLockKey(src.id))
	if !ok {
		return from, nil, busySnapshot(src.id)
	}
	snaps, err := c.findSnapshot(ctx, src.id)
	if err == nil && len(snaps) == 0 {
		err = status.Errorf(codes.NotFound, "snapshot %s does not exist", src.id)
	}
	if err != nil {
		release()
		return from, nil, err
	}
	s := snaps[0]
	from.file, from.size = s.file.Path, s.size
	st, err := c.awaitCopy(ctx, s.file.Path, s.size)
	switch {
	case err != nil:
		err = c.rdsStatus("check snapshot "+src.id, err)
	case st.phase != copyDone:
		err = status.Errorf(codes.Aborted, "snapshot %s is not ready yet (%s); retry when it is ready to use", src.id, st.detail)
	}
	if err != nil {
		release()
		return from, nil, err
	}
	return from, release, nil
}

// copySize is the size of a volume copied from a source of from.size bytes: at least the
// source's and what was asked for (in whole MiB), at most the limit. Asking for less than
// the source holds is OutOfRange.
func copySize(cr *csi.CapacityRange, minimum int64, from copySource) (int64, error) {
	req, limit := cr.GetRequiredBytes(), cr.GetLimitBytes()
	if req > 0 && req < from.size || limit > 0 && limit < from.size {
		return 0, status.Errorf(codes.OutOfRange, "%s holds %s (%d bytes) and the request asks for %s: ask for at least %d bytes",
			from, humanBytes(from.size), from.size, describeRange(cr, 0), from.size)
	}
	size := max(from.size, routeros.RoundUpMiB(max(req, minimum)))
	if limit > 0 && size > limit {
		return 0, status.Errorf(codes.OutOfRange, "a volume copied from %s (%s) must be at least %s (%d bytes; whole MiB, and xfs needs %s), above the limit of %d bytes",
			from, humanBytes(from.size), humanBytes(size), size, humanBytes(minimum), limit)
	}
	return size, nil
}

// existingCopy answers a create whose disk exists already: a retry (growing the volume if
// the earlier call was cut off before its grow), or a conflict.
func (c *controllerService) existingCopy(ctx context.Context, req *csi.CreateVolumeRequest, disk *routeros.Disk, dst string, params *volumeParams, src contentSource, minimum int64) (*csi.CreateVolumeResponse, error) {
	id := disk.Slot
	if disk.Comment != src.comment() {
		return nil, status.Errorf(codes.AlreadyExists, "volume %s (name %q) already exists and was not made from %s (its disk's comment is %q); use another name or delete the existing volume",
			id, req.GetName(), src, disk.Comment)
	}
	cr := req.GetCapacityRange()
	if want := routeros.RoundUpMiB(max(cr.GetRequiredBytes(), minimum)); disk.Size < want && disk.FilePath == dst && c.managedDisk(disk) == "" {
		var err error
		if disk, err = c.growCopy(ctx, id, want, dst); err != nil {
			return nil, err
		}
	}
	if why := c.incompatible(disk, dst, params, cr, minimum); why != "" {
		return nil, status.Errorf(codes.AlreadyExists, "volume %s (name %q) already exists and does not match this request: %s; use another name or delete the existing volume", id, req.GetName(), why)
	}
	return copyResponse(req, disk, params), nil
}

// growCopy grows a copied volume to the size asked for.
func (c *controllerService) growCopy(ctx context.Context, id string, size int64, dst string) (*routeros.Disk, error) {
	disk, err := c.client.ResizeDisk(ctx, id, size)
	switch {
	case errors.Is(err, routeros.ErrNoSpace):
		return nil, c.noSpaceStatus(ctx, "grow the copied volume "+id, path.Dir(dst), size, err)
	case err != nil:
		return nil, c.rdsStatus(fmt.Sprintf("grow the copied volume %s to %s (its data is in place; the retry grows it)", id, humanBytes(size)), err)
	}
	return disk, nil
}

func copyResponse(req *csi.CreateVolumeRequest, disk *routeros.Disk, params *volumeParams) *csi.CreateVolumeResponse {
	return &csi.CreateVolumeResponse{Volume: &csi.Volume{
		VolumeId:      disk.Slot,
		CapacityBytes: disk.Size,
		VolumeContext: params.volumeContext(disk),
		ContentSource: req.GetVolumeContentSource(),
	}}
}
