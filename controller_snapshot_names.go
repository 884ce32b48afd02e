package main

import (
	"context"
	"fmt"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

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
