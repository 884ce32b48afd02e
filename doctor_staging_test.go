package main

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"srvlab.io/rds-csi/nvme"
)

// TestDoctorStaging: staging records against the kernel and the mount table, judged by
// the node plugin's own healing rules.
func TestDoctorStaging(t *testing.T) {
	const target = "/var/lib/kubelet/pods/p/volumes/kubernetes.io~csi/v/mount"
	vol := "volume " + dtVolume1 + ": "
	staging := doctorStagingPath(dtVolume1)
	testDoctorNode(t, []doctorNodeCase{
		{name: "healthy and published", setup: func(f *doctorNode) {
			ma, mi := f.volume(1, dtVolume1)
			f.record(fsRecord(dtVolume1, ma, mi, target))
			f.mount(staging, ma, mi)
			f.mount(target, ma, mi)
		}, want: []string{"ok    " + vol + "ext4 mounted at " + staging + " from nvme1n1 (259:1)", "        publish " + target + ": on nvme1n1 (259:1)"}},
		{name: "stale mount after a reconnect", setup: func(f *doctorNode) {
			f.volume(1, dtVolume1) // the disk is 259:1 now
			f.record(fsRecord(dtVolume1, 259, 77, target))
			f.mount(staging, 259, 77)
			f.mount(target, 259, 77)
		}, code: 1, want: []string{
			"FAIL  " + vol + "stale: ", "previous device 259:77",
			"        publish " + target + ": on 259:77, but the volume's disk is nvme1n1 (259:1)",
			"      fix: the node plugin heals this by itself",
		}},
		{name: "mounted, but the controller is gone", setup: func(f *doctorNode) {
			f.record(fsRecord(dtVolume1, 259, 5))
			f.mount(staging, 259, 5)
		}, code: 1, want: []string{"FAIL  " + vol + "stale: ", "lost", "      fix: the node plugin heals this by itself"}},
		{name: "filesystem went read-only", setup: func(f *doctorNode) {
			ma, mi := f.volume(1, dtVolume1)
			f.record(fsRecord(dtVolume1, ma, mi))
			f.mount(staging, ma, mi, "ro,relatime")
		}, code: 1, want: []string{"FAIL  " + vol + "stale: ", "read-only"}},
		{name: "another device mounted at the staging path", setup: func(f *doctorNode) {
			ma, mi := f.volume(1, dtVolume1)
			f.record(fsRecord(dtVolume1, ma, mi))
			f.mount(staging, 8, 1)
		}, code: 1, want: []string{"FAIL  " + vol, "8:1", "      fix: the node plugin leaves it alone, as nothing proves it is this volume's: look at it (findmnt " + staging}},
		{name: "stale publish bind mount only", setup: func(f *doctorNode) {
			ma, mi := f.volume(1, dtVolume1)
			f.record(fsRecord(dtVolume1, ma, mi, target))
			f.mount(staging, ma, mi)
			f.mount(target, 8, 1)
		}, code: 1, want: []string{"FAIL  " + vol + "publish target " + target + " is stale: on 8:1", "      fix: restart the pod that uses the volume on this node"}},
		{name: "publish target not mounted", setup: func(f *doctorNode) {
			ma, mi := f.volume(1, dtVolume1)
			f.record(fsRecord(dtVolume1, ma, mi, target))
			f.mount(staging, ma, mi)
		}, want: []string{"ok    " + vol, "        publish " + target + ": nothing mounted (the pod may be gone)"}},
		{name: "record without a mount", setup: func(f *doctorNode) {
			ma, mi := f.volume(1, dtVolume1)
			f.record(fsRecord(dtVolume1, ma, mi))
		}, want: []string{"WARN  " + vol + "recorded as staged, but nothing is mounted at " + staging, "      fix: kubelet stages the volume again"}},
		{name: "stacked mounts", setup: func(f *doctorNode) {
			ma, mi := f.volume(1, dtVolume1)
			f.record(fsRecord(dtVolume1, ma, mi))
			f.mount(staging, ma, mi)
			f.mount(staging, ma, mi)
		}, want: []string{"WARN  " + vol + staging + " is mounted from nvme1n1, but 2 mounts are stacked there"}},
		{name: "published raw block volume", setup: func(f *doctorNode) {
			ma, mi := f.volume(1, dtVolume1)
			node := f.blockNode("dev", ma, mi)
			f.record(blockRecord(dtVolume1, ma, mi, node))
		}, want: []string{"ok    " + vol + "raw block on nvme1n1 (259:1)", ": on nvme1n1 (259:1)"}},
		{name: "raw block node of the previous device", setup: func(f *doctorNode) {
			f.volume(1, dtVolume1)
			node := f.blockNode("dev", 259, 42)
			f.record(blockRecord(dtVolume1, 259, 42, node))
		}, code: 1, want: []string{"FAIL  " + vol + "stale: ", ": on 259:42, but the volume's disk is nvme1n1 (259:1)"}},
		{name: "raw block node of a foreign device", setup: func(f *doctorNode) {
			ma, mi := f.volume(1, dtVolume1)
			node := f.blockNode("dev", 8, 1)
			f.record(blockRecord(dtVolume1, ma, mi, node))
		}, code: 1, want: []string{"FAIL  " + vol + "publish target ", " is stale: on 8:1"}},
		{name: "raw block volume, controller gone, still published", setup: func(f *doctorNode) {
			f.record(blockRecord(dtVolume1, 259, 1, filepath.Join(f.root, "publish", "dev")))
		}, code: 1, want: []string{"FAIL  " + vol + "stale: ", "lost"}},
		{name: "raw block volume, controller gone, unused", setup: func(f *doctorNode) {
			f.record(blockRecord(dtVolume1, 259, 1))
		}, want: []string{"WARN  " + vol + "not connected and not in use: "}},
		{name: "connected without a disk yet", setup: func(f *doctorNode) {
			f.subsystem(1, dtMikrotik+dtVolume1)
			f.controller(1, 1, "live", "", "")
			f.record(blockRecord(dtVolume1, 259, 1))
		}, want: []string{"WARN  " + vol, "no disk for namespace 1"}},
		{name: "interrupted heal", setup: func(f *doctorNode) {
			ma, mi := f.volume(1, dtVolume1)
			rec := fsRecord(dtVolume1, ma, mi)
			rec.Healing = true
			f.record(rec)
		}, want: []string{"WARN  " + vol, "interrupted heal: mounts may be missing until it is done"}},
		{name: "record of an earlier boot", setup: func(f *doctorNode) {
			rec := fsRecord(dtVolume1, 259, 1)
			rec.BootID = "an-earlier-boot"
			f.record(rec)
		}, want: []string{"ok    " + vol + "staged before the node last booted"}},
		{name: "record outside the managed prefix", setup: func(f *doctorNode) {
			rec := fsRecord("other", 259, 1)
			rec.NQN = dtNixosVar
			f.record(rec)
		}, want: []string{"WARN  volume other: its NQN " + dtNixosVar + " is outside the managed prefix"}},
		{name: "record of another version", setup: func(f *doctorNode) {
			rec := fsRecord(dtVolume1, 259, 1)
			rec.Version = stagingRecordVersion + 1
			f.record(rec)
		}, want: []string{"WARN  " + vol + "the node plugin ignores record ", "it is of version 2, not 1"}},
		{name: "record under another volume's name", setup: func(f *doctorNode) {
			f.record(fsRecord(dtVolume2, 259, 1), dtVolume1)
		}, want: []string{"WARN  " + vol + "the node plugin ignores record ", `it names volume "` + dtVolume2 + `"`}},
		{name: "unreadable record", setup: func(f *doctorNode) {
			f.write(filepath.Join(f.stateDir, "volumes", "broken.json"), "{not json")
			f.write(filepath.Join(f.stateDir, "volumes", ".broken.json.123.tmp"), "a temporary file of the node plugin")
			f.write(filepath.Join(f.stateDir, "volumes", "README"), "not a record")
		}, want: []string{"ok    staging records: 1 in ", "WARN  volume broken: the node plugin ignores record ", "invalid character"}},
		{name: "state dir unreadable", setup: func(f *doctorNode) { f.write(filepath.Join(f.stateDir, "volumes"), "a file") }, code: 1,
			want: []string{"FAIL  staging records: cannot read "}},
		{name: "mount table unreadable", setup: func(f *doctorNode) {
			ma, mi := f.volume(1, dtVolume1)
			f.record(fsRecord(dtVolume1, ma, mi))
			f.mountErr = errors.New("cannot read the mount table, so mount state is unknown: boom")
		}, code: 1, want: []string{"FAIL  " + vol + "cannot read the mount table, so mount state is unknown: boom"}},
		{name: "mount table hangs", args: []string{"--timeout=300ms"}, setup: func(f *doctorNode) {
			ma, mi := f.volume(1, dtVolume1)
			f.record(fsRecord(dtVolume1, ma, mi))
			f.mountHang = make(chan struct{})
			f.t.Cleanup(func() { close(f.mountHang) })
		}, code: 1, want: []string{"FAIL  " + vol + "did not finish within 300ms", "      fix: re-run with a longer --timeout (e.g. --timeout=900ms); if it still hangs: a read of sysfs or /dev is stuck"}},
	})
}

// TestDoctorPaths: the doctor lists a multipath volume's paths, and warns (saying what to
// do) when one is down or native multipath is off.
func TestDoctorPaths(t *testing.T) {
	rec := stagingRecord{VolumeID: "pvc-mp", NQN: testPrefix + "mp", Address: "10.0.0.10", Addresses: []string{"10.0.0.10", "10.0.1.10"}, Port: 4420}
	ctrl := func(name, addr, state string) nvme.Controller {
		return nvme.Controller{Name: name, State: state, TrAddr: addr, TrSvcID: 4420}
	}
	ok := okResult("ext4 mounted")
	for _, tc := range []struct {
		name        string
		single      bool
		ctrls       []nvme.Controller
		status      verdict
		finding     string
		fix, detail string
	}{
		{"both live", false, []nvme.Controller{ctrl("nvme1", "10.0.0.10", "live"), ctrl("nvme2", "10.0.1.10", "live")}, verdictOK, "ext4 mounted", "",
			"paths: 10.0.0.10 live (nvme1), 10.0.1.10 live (nvme2)"},
		{"one reconnecting", false, []nvme.Controller{ctrl("nvme1", "10.0.0.10", "live"), ctrl("nvme2", "10.0.1.10", "connecting")}, verdictWarn,
			"degraded: 1 of 2 paths live (10.0.0.10 live (nvme1), 10.0.1.10 reconnecting)", "check the network path", "paths: 10.0.0.10 live (nvme1), 10.0.1.10 reconnecting"},
		{"one given up", false, []nvme.Controller{ctrl("nvme2", "10.0.1.10", "live")}, verdictWarn,
			"degraded: 1 of 2 paths live (10.0.0.10 not connected, 10.0.1.10 live (nvme2))", "node plugin one the kernel gave up", "10.0.0.10 not connected"},
		{"multipath off", true, []nvme.Controller{ctrl("nvme1", "10.0.0.10", "live")}, verdictWarn,
			"uses one of its 2 paths (10.0.0.10), because native NVMe multipath was off", "nvme_core.multipath=Y", "10.0.1.10 unused (native NVMe multipath is off)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := rec
			r.SinglePath = tc.single
			h := nvme.Health{Controllers: tc.ctrls, Connected: true, Live: true}
			got := judgePaths(ok, r, stagedFacts{health: h, paths: pathStatesOf(r, h, nil)})
			if got.status != tc.status || !strings.Contains(got.finding, tc.finding) || !strings.Contains(got.fix, tc.fix) ||
				len(got.details) != 1 || !strings.Contains(got.details[0], tc.detail) {
				t.Fatalf("got %+v, want status %v finding %q fix %q detail %q", got, tc.status, tc.finding, tc.fix, tc.detail)
			}
		})
	}
	if got := judgePaths(failResult("x", "stale"), rec, stagedFacts{}); got.status != verdictFail || got.finding != "stale" {
		t.Fatalf("a failing volume's verdict must stay: %+v", got)
	}
}
