package main

import (
	"os"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"srvlab.io/rds-csi/mount"
	"srvlab.io/rds-csi/nvme"
)

func TestHealPlan(t *testing.T) {
	fsRec := stagingRecord{VolumeID: "pvc-1", FSType: "ext4", StagingPath: "/staging", Major: 259, Minor: 1}
	blockRec := stagingRecord{VolumeID: "pvc-2", Block: true, Major: 259, Minor: 1, Published: map[string]bool{"/pods/a/dev": false}}
	oldDisk := &nvme.Disk{Name: "nvme1n1", Major: 259, Minor: 1}
	newDisk := &nvme.Disk{Name: "nvme1n2", Major: 259, Minor: 4}
	mounted := func(major, minor int, opts, vfs string) *mount.Entry {
		return &mount.Entry{Major: major, Minor: minor, Mountpoint: "/staging", Options: opts, VFSOptions: vfs}
	}
	healing := fsRec
	healing.Healing = true
	readOnlyRec := fsRec
	readOnlyRec.ReadOnly = true
	unpublished := blockRec
	unpublished.Published = nil
	for _, tc := range []struct {
		name               string
		rec                stagingRecord
		facts              stagedFacts
		reconnect, replace bool
		reason             string
	}{
		{"healthy", fsRec, stagedFacts{currentBoot: true, disk: oldDisk, staging: mounted(259, 1, "rw", "rw")}, false, false, ""},
		{"earlier boot", fsRec, stagedFacts{lost: true, staging: mounted(259, 1, "rw", "rw"), demand: true}, false, false, "before the node last booted"},
		{"lost under a mount", fsRec, stagedFacts{currentBoot: true, lost: true, staging: mounted(259, 1, "rw", "rw")}, true, true, "controller was lost"},
		{"lost, nothing mounted", fsRec, stagedFacts{currentBoot: true, lost: true}, false, false, "not in use"},
		{"lost, publish asks", fsRec, stagedFacts{currentBoot: true, lost: true, demand: true}, true, false, "controller was lost"},
		{"new names under a stale mount", fsRec, stagedFacts{currentBoot: true, disk: newDisk, staging: mounted(259, 1, "rw", "rw")}, false, true, "previous device 259:1"},
		{"someone else's mount", fsRec, stagedFacts{currentBoot: true, disk: newDisk, staging: mounted(8, 1, "rw", "rw")}, false, false, "not this volume's"},
		{"went read-only", fsRec, stagedFacts{currentBoot: true, disk: oldDisk, staging: mounted(259, 1, "rw", "ro")}, false, true, "read-only"},
		{"read-only by request", readOnlyRec, stagedFacts{currentBoot: true, disk: oldDisk, staging: mounted(259, 1, "ro", "ro")}, false, false, ""},
		{"interrupted heal", healing, stagedFacts{currentBoot: true, disk: newDisk}, false, true, "interrupted"},
		{"interrupted heal, lost again", healing, stagedFacts{currentBoot: true, lost: true}, true, true, "controller was lost"},
		{"disk not there yet", fsRec, stagedFacts{currentBoot: true, staging: mounted(259, 1, "rw", "rw")}, false, false, "not resolvable"},
		{"block lost while published", blockRec, stagedFacts{currentBoot: true, lost: true}, true, true, "controller was lost"},
		{"block lost, unpublished", unpublished, stagedFacts{currentBoot: true, lost: true}, false, false, "not in use"},
		{"block stale node", blockRec, stagedFacts{currentBoot: true, disk: newDisk, staleNodes: true}, false, true, "previous device"},
		{"block healthy", blockRec, stagedFacts{currentBoot: true, disk: oldDisk}, false, false, ""},
		{"seen healthy by stat", fsRec, stagedFacts{currentBoot: true, disk: oldDisk, stagingOK: true}, false, false, ""},
		{"seen healthy by stat, but lost", fsRec, stagedFacts{currentBoot: true, lost: true, stagingOK: true, demand: true}, true, false, "controller was lost"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := planHeal(tc.rec, tc.facts)
			if p.reconnect != tc.reconnect || p.replace != tc.replace || !strings.Contains(p.reason, tc.reason) {
				t.Fatalf("plan %+v, want reconnect=%v replace=%v reason containing %q", p, tc.reconnect, tc.replace, tc.reason)
			}
		})
	}
}

// TestStagingOnDisk: the watcher's stat-only check accepts only the disk's writable
// filesystem at the staging path; a filesystem mounted read-only is left to the mount
// table.
func TestStagingOnDisk(t *testing.T) {
	dir := t.TempDir()
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		t.Fatal(err)
	}
	disk := &nvme.Disk{Major: unix.Major(st.Dev), Minor: unix.Minor(st.Dev)}
	rec := stagingRecord{StagingPath: dir, Major: disk.Major, Minor: disk.Minor}
	if !stagingOnDisk(rec, disk) {
		t.Fatal("the disk's own filesystem was not recognised")
	}
	if stagingOnDisk(rec, &nvme.Disk{Major: disk.Major, Minor: disk.Minor + 1}) {
		t.Fatal("another disk was taken for the staging filesystem's")
	}
	if old := (stagingRecord{StagingPath: dir, Major: disk.Major, Minor: disk.Minor + 1}); stagingOnDisk(old, disk) {
		t.Fatal("a record of another device passed")
	}
	if os.Geteuid() != 0 {
		return
	}
	ro := t.TempDir()
	if err := unix.Mount("tmpfs", ro, "tmpfs", unix.MS_RDONLY, ""); err != nil {
		t.Fatal(err)
	}
	defer unix.Unmount(ro, 0)
	if err := unix.Stat(ro, &st); err != nil {
		t.Fatal(err)
	}
	disk = &nvme.Disk{Major: unix.Major(st.Dev), Minor: unix.Minor(st.Dev)}
	rec = stagingRecord{StagingPath: ro, Major: disk.Major, Minor: disk.Minor}
	if stagingOnDisk(rec, disk) {
		t.Fatal("a read-only filesystem passed the writable check")
	}
	rec.ReadOnly = true
	if !stagingOnDisk(rec, disk) {
		t.Fatal("a volume staged read-only was refused")
	}
}
