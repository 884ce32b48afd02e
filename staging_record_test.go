package main

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"srvlab.io/rds-csi/nvme"
)

func TestNodeStagingRecordRoundTrip(t *testing.T) {
	dir := t.TempDir()
	s, bad, err := openRecordStore(dir)
	if err != nil || len(bad) != 0 {
		t.Fatal(err, bad)
	}
	five := 5
	rec := newStagingRecord("pvc-1", "/var/lib/kubelet/plugins/x/globalmount/",
		nvme.Target{Address: "10.0.0.5", Port: 4420, NQN: testPrefix + "1", NSID: 1}, []string{"10.0.0.5"},
		nvme.Options{ReconnectDelay: &five}, volumeAccess{fsType: "xfs", mountFlags: []string{"noatime"}})
	rec.BootID, rec.Major, rec.Minor = "boot-1", 259, 3
	rec.Published = map[string]bool{"/pods/a": false, "/pods/b": true}
	if err := s.put(rec); err != nil {
		t.Fatal(err)
	}
	if rec.StagingPath != "/var/lib/kubelet/plugins/x/globalmount" {
		t.Fatalf("staging path not cleaned: %q", rec.StagingPath)
	}
	again, bad, err := openRecordStore(dir) // a restarted node plugin
	if err != nil || len(bad) != 0 {
		t.Fatal(err, bad)
	}
	got, ok := again.get("pvc-1")
	rec.Version = stagingRecordVersion
	if !ok || !reflect.DeepEqual(got, rec) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, rec)
	}
	if *got.options().ReconnectDelay != 5 || got.options().CtrlLossTmo != nil || got.target() != (nvme.Target{Address: "10.0.0.5", Port: 4420, NQN: testPrefix + "1", NSID: 1}) {
		t.Fatalf("target %+v options %+v", got.target(), got.options())
	}
	got.Published["/pods/c"] = false // a copy: the store must not change
	if again, _ := again.get("pvc-1"); len(again.Published) != 2 {
		t.Fatal("get returned the store's own map")
	}
	entries, _ := os.ReadDir(filepath.Join(dir, "volumes"))
	if len(entries) != 1 || entries[0].Name() != "pvc-1.json" {
		t.Fatalf("state dir holds %v, want only pvc-1.json (no temporary files)", entries)
	}
	if err := again.remove("pvc-1"); err != nil {
		t.Fatal(err)
	}
	if err := again.remove("pvc-1"); err != nil {
		t.Fatalf("second remove: %v", err)
	}
	if _, ok := again.get("pvc-1"); ok {
		t.Fatal("removed record still there")
	}
}

func TestNodeStagingRecordStoreRefuses(t *testing.T) {
	dir := t.TempDir()
	vols := filepath.Join(dir, "volumes")
	if err := os.MkdirAll(vols, 0o700); err != nil {
		t.Fatal(err)
	}
	for name, body := range map[string]string{
		"pvc-broken.json": "{not json",
		"pvc-moved.json":  `{"version":1,"volumeId":"pvc-other","nqn":"x"}`,
		"pvc-future.json": `{"version":2,"volumeId":"pvc-future","nqn":"x"}`,
		"notes.txt":       "ignored",
	} {
		if err := os.WriteFile(filepath.Join(vols, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	s, bad, err := openRecordStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(bad) != 3 || len(s.all()) != 0 {
		t.Fatalf("bad %v, loaded %v: want the three unusable records reported and none loaded", bad, s.all())
	}
	// sorted by file name, each with the reason the doctor reports too (readRecordFiles)
	for i, want := range []string{"pvc-broken.json is ignored: invalid character", "pvc-future.json is ignored: it is of version 2, not 1", `pvc-moved.json is ignored: it names volume "pvc-other"`} {
		if !strings.Contains(bad[i].Error(), want) {
			t.Errorf("report %d: %q, want it to contain %q", i, bad[i], want)
		}
	}
	if _, err := os.Stat(filepath.Join(vols, "pvc-broken.json")); err != nil {
		t.Fatal("an unreadable record must stay on disk for a human to look at")
	}
	for _, id := range []string{"", "../escape", ".hidden", strings.Repeat("x", 129)} {
		if err := s.put(stagingRecord{VolumeID: id}); err == nil {
			t.Errorf("put accepted volume ID %q", id)
		}
	}
}

func TestVolumeLocksRefuseConcurrentHolders(t *testing.T) {
	l := newVolumeLocks()
	release, ok := l.tryLock("pvc-1")
	if !ok {
		t.Fatal("first lock refused")
	}
	if _, ok := l.tryLock("pvc-1"); ok {
		t.Fatal("second holder of pvc-1 admitted")
	}
	if r, ok := l.tryLock("pvc-2"); !ok {
		t.Fatal("another volume blocked")
	} else {
		r()
	}
	release()
	release() // idempotent
	if r, ok := l.tryLock("pvc-1"); !ok {
		t.Fatal("lock not released")
	} else {
		r()
	}
}
