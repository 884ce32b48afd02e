package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"srvlab.io/rds-csi/nvme"
)

// stagingRecordVersion is bumped when the record's meaning changes incompatibly.
const stagingRecordVersion = 1

// stagingRecord is what the node remembers about a staged volume, in
// <StateDir>/volumes/<volume-id>.json: enough to find its disk again after the kernel
// renamed it (NQN and nsid, never a device name), to reconnect it, and to restore its
// mounts. It is never written into the staging path: for block volumes that path must
// hold nothing kubelet can see.
type stagingRecord struct {
	Version  int    `json:"version"`
	VolumeID string `json:"volumeId"`
	NQN      string `json:"nqn"`
	NSID     int    `json:"nsid"`
	Address  string `json:"address"`
	Port     int    `json:"port"`
	// Addresses are every path of a multipath volume, Address the primary among them;
	// nil for one path, so such records read as before.
	Addresses []string `json:"addresses,omitempty"`
	// SinglePath: several paths, but Address only is used, because native NVMe
	// multipath was off when it was connected.
	SinglePath  bool          `json:"singlePath,omitempty"`
	Options     recordOptions `json:"options"`
	StagingPath string        `json:"stagingPath"`
	Block       bool          `json:"block"`
	FSType      string        `json:"fsType,omitempty"`
	MountFlags  []string      `json:"mountFlags,omitempty"`
	ReadOnly    bool          `json:"readOnly,omitempty"`
	// BootID is the kernel boot the volume was connected in. A record of an earlier boot
	// describes no connection or mount that still exists, so nothing is healed from it.
	BootID string `json:"bootId"`
	// Major and Minor are the disk the volume was last mounted or published from: the
	// proof that a mount found later on another device number is this volume's stale one.
	Major     uint32          `json:"major"`
	Minor     uint32          `json:"minor"`
	Published map[string]bool `json:"published,omitempty"` // publish target → read-only
	// Healing is set between unmounting stale mounts and mounting the new disk, so a
	// restart mid-way finishes the job.
	Healing bool `json:"healing,omitempty"`
}

// recordOptions are the connect options from the volume context, nil when not given.
type recordOptions struct {
	CtrlLossTmo    *int `json:"ctrlLossTmo,omitempty"`
	ReconnectDelay *int `json:"reconnectDelay,omitempty"`
	KeepAliveTmo   *int `json:"keepAliveTmo,omitempty"`
	FastIOFailTmo  *int `json:"fastIoFailTmo,omitempty"`
	NrIOQueues     *int `json:"nrIoQueues,omitempty"`
	QueueSize      *int `json:"queueSize,omitempty"`
}

func newStagingRecord(id, stagingPath string, t nvme.Target, paths []string, o nvme.Options, m volumeAccess) stagingRecord {
	if len(paths) < 2 {
		paths = nil
	}
	return stagingRecord{Addresses: slices.Clone(paths),
		Version: stagingRecordVersion, VolumeID: id, NQN: t.NQN, NSID: t.NSID, Address: t.Address, Port: t.Port,
		Options: recordOptions(o), StagingPath: filepath.Clean(stagingPath), Block: m.block,
		FSType: m.fsType, MountFlags: m.mountFlags, ReadOnly: m.readOnly,
	}
}

func (r *stagingRecord) target() nvme.Target {
	return nvme.Target{Address: r.Address, Port: r.Port, NQN: r.NQN, NSID: r.NSID}
}

func (r *stagingRecord) options() nvme.Options { return nvme.Options(r.Options) }

// sameVolume reports whether a new stage request describes the staged volume.
func (r *stagingRecord) sameVolume(o stagingRecord) bool {
	return r.NQN == o.NQN && r.NSID == o.NSID && r.StagingPath == o.StagingPath && r.Block == o.Block &&
		(r.Block || r.FSType == o.FSType)
}

func (r *stagingRecord) kind() string {
	if r.Block {
		return "a raw block volume"
	}
	return "a " + r.FSType + " filesystem"
}

// clone returns a deep copy, so callers can change it without touching the store's.
func (r stagingRecord) clone() stagingRecord {
	r.MountFlags = slices.Clone(r.MountFlags)
	r.Addresses = slices.Clone(r.Addresses)
	r.Published = maps.Clone(r.Published)
	return r
}

// publishTargets returns the publish targets in a stable order.
func (r *stagingRecord) publishTargets() []string { return slices.Sorted(maps.Keys(r.Published)) }

// recordStore keeps the staging records in memory and on disk (written atomically, so a
// crash leaves the old record or the new one, never half of one).
type recordStore struct {
	dir  string
	mu   sync.Mutex
	recs map[string]stagingRecord
}

// openRecordStore loads every record in <stateDir>/volumes. An unreadable record is
// reported and left on disk for a human to look at; it does not stop the node.
func openRecordStore(stateDir string) (*recordStore, []error, error) {
	dir := filepath.Join(stateDir, "volumes")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, nil, fmt.Errorf("create the node state directory %s: %w (set --state-dir to a writable host directory)", dir, err)
	}
	files, err := readRecordFiles(dir)
	if err != nil {
		return nil, nil, fmt.Errorf("read the node state directory %s: %w", dir, err)
	}
	s := &recordStore{dir: dir, recs: map[string]stagingRecord{}}
	var bad []error
	for _, f := range files {
		if f.err != nil {
			bad = append(bad, fmt.Errorf("staging record %s is ignored: %w; remove it once the volume is unstaged", filepath.Base(f.path), f.err))
			continue
		}
		s.recs[f.rec.VolumeID] = f.rec
	}
	return s, bad, nil
}

// recordFile is one record file as read: its record, or why the node plugin ignores it.
type recordFile struct {
	path string
	rec  stagingRecord
	err  error
}

// readRecordFiles reads the record files in dir, sorted by name, changing nothing: the
// node plugin loads them at start, and the doctor reports exactly what it would load.
func readRecordFiles(dir string) ([]recordFile, error) {
	names, err := jsonFiles(dir)
	if err != nil {
		return nil, err
	}
	var out []recordFile
	for _, name := range names {
		f := recordFile{path: filepath.Join(dir, name)}
		raw, err := os.ReadFile(f.path)
		if err == nil {
			err = json.Unmarshal(raw, &f.rec)
		}
		switch {
		case err != nil:
		case f.rec.Version != stagingRecordVersion:
			err = fmt.Errorf("it is of version %d, not %d", f.rec.Version, stagingRecordVersion)
		case f.rec.VolumeID+".json" != name:
			err = fmt.Errorf("it names volume %q, not the one in its file name", f.rec.VolumeID)
		}
		f.err = err
		out = append(out, f)
	}
	return out, nil
}

// jsonFiles lists the *.json files in dir, sorted; names starting with '.' are
// writeFileAtomic's temporary files.
func jsonFiles(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	var out []string
	for _, e := range entries {
		if name := e.Name(); strings.HasSuffix(name, ".json") && !strings.HasPrefix(name, ".") {
			out = append(out, name)
		}
	}
	return out, err
}

func (s *recordStore) get(id string) (stagingRecord, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.recs[id]
	return r.clone(), ok
}

func (s *recordStore) all() []stagingRecord {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]stagingRecord, 0, len(s.recs))
	for _, id := range slices.Sorted(maps.Keys(s.recs)) {
		out = append(out, s.recs[id].clone())
	}
	return out
}

// put writes r to disk, then to memory.
func (s *recordStore) put(r stagingRecord) error {
	if err := validVolumeIDForFile(r.VolumeID); err != nil {
		return err
	}
	r.Version = stagingRecordVersion
	if err := writeJSON(filepath.Join(s.dir, r.VolumeID+".json"), r); err != nil {
		return fmt.Errorf("write the staging record of %s: %w", r.VolumeID, err)
	}
	s.mu.Lock()
	s.recs[r.VolumeID] = r.clone()
	s.mu.Unlock()
	return nil
}

func (s *recordStore) remove(id string) error {
	if err := validVolumeIDForFile(id); err != nil {
		return err
	}
	if err := removeSynced(filepath.Join(s.dir, id+".json")); err != nil {
		return fmt.Errorf("remove the staging record of %s: %w", id, err)
	}
	s.mu.Lock()
	delete(s.recs, id)
	s.mu.Unlock()
	return nil
}

// validVolumeIDForFile keeps a volume ID usable as one file name. Our IDs are PV names
// (pvc-<uuid>); anything with a path separator or a leading dot could escape the
// directory or hide the record.
func validVolumeIDForFile(id string) error {
	if id == "" || len(id) > 128 || strings.HasPrefix(id, ".") || strings.ContainsAny(id, "/\x00") {
		return fmt.Errorf("volume ID %q cannot be recorded: it must be 1-128 bytes without '/' or a leading '.'", id)
	}
	return nil
}

// writeJSON replaces path with v as indented JSON: a temporary file in the same
// directory, fsync, rename over path, fsync of the directory.
func writeJSON(path string, v any) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // after a successful rename there is nothing left to remove
	if _, err = tmp.Write(data); err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		return err
	}
	return syncDir(dir)
}

// removeSynced removes path (missing is fine) and syncs its directory.
func removeSynced(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return syncDir(filepath.Dir(path))
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}

// volumeLocks serialises operations per volume without ever waiting: a second call on
// the same volume is refused (the RPC answers Aborted, which the sidecars retry), so a
// stuck call never piles callers up behind it.
type volumeLocks struct {
	mu   sync.Mutex
	held map[string]struct{}
}

func newVolumeLocks() *volumeLocks { return &volumeLocks{held: map[string]struct{}{}} }

// tryLock takes the lock for id and returns its release function, or ok=false when
// another operation holds it.
func (l *volumeLocks) tryLock(id string) (release func(), ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, busy := l.held[id]; busy {
		return nil, false
	}
	l.held[id] = struct{}{}
	var once sync.Once
	return func() {
		once.Do(func() {
			l.mu.Lock()
			delete(l.held, id)
			l.mu.Unlock()
		})
	}, true
}
