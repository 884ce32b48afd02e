package nvme

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestResolve(t *testing.T) {
	const gib = 2 * 1024 * 1024 // sectors
	tests := []struct {
		name     string
		build    func(f *fakeSys)
		nqn      string
		nsid     int
		wantDisk string
		wantSize int64
		wantCtrl []string
		wantErr  error
		errHas   string
	}{
		{
			name: "multipath naming",
			build: func(f *fakeSys) {
				f.addSubsystem(0, testPrefix+"a").addController(0, 0, ctrlSpec{})
				f.addHead(0, 1, 1, gib)
			},
			nqn: testPrefix + "a", wantDisk: "nvme0n1", wantSize: gib * 512, wantCtrl: []string{"nvme0"},
		},
		{
			name: "multipath off naming",
			build: func(f *fakeSys) {
				f.addSubsystem(0, nixosVar).addController(0, 0, ctrlSpec{})
				f.addDirect(0, 1, 1, gib)
				f.addSubsystem(1, testPrefix+"a").addController(1, 3, ctrlSpec{})
				f.addDirect(3, 1, 1, 2*gib)
			},
			nqn: testPrefix + "a", wantDisk: "nvme3n1", wantSize: 2 * gib * 512, wantCtrl: []string{"nvme3"},
		},
		{
			name: "nsid is not the head counter",
			build: func(f *fakeSys) {
				f.addSubsystem(2, testPrefix+"a").addController(2, 1, ctrlSpec{})
				f.addHead(2, 1, 3, gib)
				f.addHead(2, 2, 9, 2*gib)
			},
			nqn: testPrefix + "a", nsid: 9, wantDisk: "nvme2n2", wantSize: 2 * gib * 512, wantCtrl: []string{"nvme1"},
		},
		{
			name: "nsid 0 means 1",
			build: func(f *fakeSys) {
				f.addSubsystem(0, testPrefix+"a").addController(0, 0, ctrlSpec{})
				f.addHead(0, 1, 2, gib)
				f.addHead(0, 2, 1, gib)
			},
			nqn: testPrefix + "a", nsid: 0, wantDisk: "nvme0n2", wantSize: gib * 512, wantCtrl: []string{"nvme0"},
		},
		{
			name: "pvc-1 does not alias pvc-10 or pvc-1x",
			build: func(f *fakeSys) {
				f.addSubsystem(0, testPrefix+"10").addController(0, 0, ctrlSpec{})
				f.addHead(0, 1, 1, gib)
				f.addSubsystem(1, testPrefix+"1x").addController(1, 1, ctrlSpec{})
				f.addHead(1, 1, 1, gib)
				f.addSubsystem(2, testPrefix+"1").addController(2, 2, ctrlSpec{})
				f.addHead(2, 1, 1, 3*gib)
			},
			nqn: testPrefix + "1", wantDisk: "nvme2n1", wantSize: 3 * gib * 512, wantCtrl: []string{"nvme2"},
		},
		{
			name: "several subsystems and two paths",
			build: func(f *fakeSys) {
				f.addSubsystem(0, nixosVar).addController(0, 0, ctrlSpec{})
				f.addHead(0, 1, 1, gib)
				f.addSubsystem(1, testPrefix+"a").addController(1, 1, ctrlSpec{state: "connecting"}).
					addController(1, 2, ctrlSpec{traddr: "10.0.0.2"})
				f.addHead(1, 1, 1, gib)
			},
			nqn: testPrefix + "a", wantDisk: "nvme1n1", wantSize: gib * 512, wantCtrl: []string{"nvme1", "nvme2"},
		},
		{
			name: "renumbered after ctrl loss: new controller and head in the held subsystem",
			build: func(f *fakeSys) {
				f.addSubsystem(1, testPrefix+"a").addController(1, 3, ctrlSpec{})
				f.addHead(1, 2, 1, gib) // nvme1n1 is still held by the stale mount's old head
			},
			nqn: testPrefix + "a", wantDisk: "nvme1n2", wantSize: gib * 512, wantCtrl: []string{"nvme3"},
		},
		{
			name:    "not connected",
			build:   func(f *fakeSys) { f.addSubsystem(0, testPrefix+"b").addController(0, 0, ctrlSpec{}) },
			nqn:     testPrefix + "a",
			wantErr: ErrNotConnected, errHas: "no NVMe subsystem",
		},
		{
			name:    "no class directories at all (nvme-core not loaded)",
			build:   func(f *fakeSys) { must(os.RemoveAll(filepath.Join(f.root, "class"))) },
			nqn:     testPrefix + "a",
			wantErr: ErrNotConnected,
		},
		{
			name:    "connected, no disk yet",
			build:   func(f *fakeSys) { f.addSubsystem(0, testPrefix+"a").addController(0, 0, ctrlSpec{}) },
			nqn:     testPrefix + "a",
			wantErr: ErrNoDisk, errHas: "no namespace yet",
		},
		{
			name: "connected, other namespace only",
			build: func(f *fakeSys) {
				f.addSubsystem(0, testPrefix+"a").addController(0, 0, ctrlSpec{})
				f.addHead(0, 1, 7, gib)
			},
			nqn: testPrefix + "a", nsid: 1,
			wantErr: ErrNoDisk, errHas: "namespace IDs 7",
		},
		{
			name: "hidden paths only: the head is never derived from a path's name",
			build: func(f *fakeSys) {
				f.addSubsystem(0, testPrefix+"a").addController(0, 0, ctrlSpec{})
				name := f.addHead(0, 1, 1, gib)
				must(os.RemoveAll(filepath.Join(f.subsysDir(0), name)))
			},
			nqn:     testPrefix + "a",
			wantErr: ErrNoDisk,
		},
		{
			name: "stale subsystem left after ctrl loss",
			build: func(f *fakeSys) {
				f.held[0] = true
				f.addSubsystem(0, testPrefix+"a").addController(0, 0, ctrlSpec{})
				f.addHead(0, 1, 1, gib)
				f.removeController(0)
			},
			nqn:     testPrefix + "a",
			wantErr: ErrNotConnected, errHas: "no controllers left",
		},
		{
			name: "device node missing",
			build: func(f *fakeSys) {
				f.addSubsystem(0, testPrefix+"a").addController(0, 0, ctrlSpec{})
				must(os.Remove(filepath.Join(f.dev, f.addHead(0, 1, 1, gib))))
			},
			nqn:     testPrefix + "a",
			wantErr: ErrNoDisk, errHas: "does not exist yet",
		},
		{
			name: "device node of another disk",
			build: func(f *fakeSys) {
				f.addSubsystem(0, testPrefix+"a").addController(0, 0, ctrlSpec{})
				f.addDevNode(f.addHead(0, 1, 1, gib), "259:99")
			},
			nqn:     testPrefix + "a",
			wantErr: ErrNoDisk, errHas: "stale",
		},
		{
			name: "unmanaged subsystem is refused",
			build: func(f *fakeSys) {
				f.addSubsystem(0, nixosVar).addController(0, 0, ctrlSpec{})
				f.addHead(0, 1, 1, gib)
			},
			nqn:     nixosVar,
			wantErr: ErrNotManaged, errHas: nixosVar,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeSys(t)
			tt.build(f)
			h := newTestHost(t, f, newFakeFabrics())
			d, err := h.Resolve(tt.nqn, tt.nsid)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) || !strings.Contains(fmt.Sprint(err), tt.errHas) {
					t.Fatalf("Resolve = %+v, %v; want %v containing %q", d, err, tt.wantErr, tt.errHas)
				}
				return
			}
			if err != nil {
				t.Fatalf("Resolve: %v", err)
			}
			if d.Name != tt.wantDisk || d.DevPath != filepath.Join(f.dev, tt.wantDisk) || d.SizeBytes != tt.wantSize || d.NQN != tt.nqn {
				t.Errorf("Resolve = %s %s size %d nqn %s; want %s size %d", d.Name, d.DevPath, d.SizeBytes, d.NQN, tt.wantDisk, tt.wantSize)
			}
			want, _ := os.ReadFile(filepath.Join(f.root, "block", d.Name, "dev"))
			if got := fmt.Sprintf("%d:%d", d.Major, d.Minor); got != strings.TrimSpace(string(want)) {
				t.Errorf("major:minor = %s, want %s", got, want)
			}
			wantNSID := tt.nsid
			if wantNSID == 0 {
				wantNSID = 1
			}
			if d.NSID != wantNSID || d.WWID == "" {
				t.Errorf("NSID %d WWID %q, want nsid %d and a wwid", d.NSID, d.WWID, wantNSID)
			}
			var ctrls []string
			for _, c := range d.Controllers {
				ctrls = append(ctrls, c.Name)
				if c.Transport != "tcp" || c.HostNQN != testHostNQN || c.TrSvcID != 4420 || c.TrAddr == "" {
					t.Errorf("controller %+v not fully read", c)
				}
			}
			if fmt.Sprint(ctrls) != fmt.Sprint(tt.wantCtrl) {
				t.Errorf("controllers %v, want %v", ctrls, tt.wantCtrl)
			}
			if w := f.writeLog(); len(w) != 0 {
				t.Errorf("Resolve wrote to sysfs: %v", w)
			}
		})
	}
}

func TestHealth(t *testing.T) {
	tests := []struct {
		name          string
		states        []string // controllers of the subsystem; nil = not connected
		wantLive      bool
		wantConnected bool
	}{
		{"live", []string{"live"}, true, true},
		{"connecting", []string{"connecting"}, false, true},
		{"resetting", []string{"resetting"}, false, true},
		{"deleting", []string{"deleting (no IO)"}, false, true},
		{"one of two paths live", []string{"connecting", "live"}, true, true},
		{"gone", nil, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeSys(t)
			f.addSubsystem(0, nixosVar).addController(0, 0, ctrlSpec{})
			if tt.states != nil {
				f.addSubsystem(1, testPrefix+"a")
				for i, st := range tt.states {
					f.addController(1, 1+i, ctrlSpec{state: st})
				}
			}
			h := newTestHost(t, f, newFakeFabrics())
			hl, err := h.Health(testPrefix + "a")
			if err != nil {
				t.Fatal(err)
			}
			if hl.Live != tt.wantLive || hl.Connected != tt.wantConnected || len(hl.Controllers) != len(tt.states) {
				t.Fatalf("Health = %+v, want live=%v connected=%v with %d controllers", hl, tt.wantLive, tt.wantConnected, len(tt.states))
			}
			for i, c := range hl.Controllers {
				if c.State != tt.states[i] {
					t.Errorf("controller %s state %q, want %q", c.Name, c.State, tt.states[i])
				}
			}
		})
	}
	t.Run("unmanaged", func(t *testing.T) {
		f := newFakeSys(t)
		f.addSubsystem(0, nixosVar).addController(0, 0, ctrlSpec{})
		if _, err := newTestHost(t, f, newFakeFabrics()).Health(nixosVar); !errors.Is(err, ErrNotManaged) {
			t.Fatalf("Health(unmanaged) = %v, want ErrNotManaged", err)
		}
	})
}

func TestSubsystems(t *testing.T) {
	f := newFakeSys(t)
	f.addSubsystem(0, nixosVar).addController(0, 0, ctrlSpec{})
	f.addHead(0, 1, 1, 100)
	f.addSubsystem(10, testPrefix+"b").addController(10, 2, ctrlSpec{state: "connecting"})
	f.addHead(10, 1, 1, 200)
	f.addHead(10, 2, 5, 300)
	f.addSubsystem(2, testPrefix+"a").addController(2, 1, ctrlSpec{})
	f.addDirect(1, 1, 1, 400)
	before := f.snapshot(f.root)

	subs, err := newTestHost(t, f, newFakeFabrics()).Subsystems()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, s := range subs {
		var disks []string
		for _, d := range s.Disks {
			disks = append(disks, fmt.Sprintf("%s/ns%d/%d", d.Name, d.NSID, d.SizeBytes/512))
		}
		got = append(got, fmt.Sprintf("%s %s managed=%v ctrls=%s disks=%v", s.Name, s.NQN, s.Managed, describeControllers(s.Controllers), disks))
	}
	want := []string{
		"nvme-subsys0 " + nixosVar + " managed=false ctrls=nvme0 live disks=[nvme0n1/ns1/100]",
		"nvme-subsys2 " + testPrefix + "a managed=true ctrls=nvme1 live disks=[nvme1n1/ns1/400]",
		"nvme-subsys10 " + testPrefix + "b managed=true ctrls=nvme2 connecting disks=[nvme10n1/ns1/200 nvme10n2/ns5/300]",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("Subsystems:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if after := f.snapshot(f.root); after != before {
		t.Fatal("Subsystems changed sysfs")
	}
}

// BenchmarkResolve256 resolves disks among 256 subsystems (each with a controller, a
// head disk and a hidden path). Goal: < 2 ms/op.
//   - warm: cycling through all 256 volumes, as a node does (lookups start at the hint);
//   - cold-worst: no hint and the volume whose subsystem the directory scan reaches last.
func BenchmarkResolve256(b *testing.B) {
	f := newFakeSys(b)
	nqns := make([]string, 256)
	for i := range nqns {
		nqns[i] = fmt.Sprintf("%s%08d-0000-4000-8000-000000000000", testPrefix, i)
		f.addSubsystem(i, nqns[i]).addController(i, i, ctrlSpec{})
		f.addHead(i, 1, 1, 1<<21)
	}
	h := newTestHost(b, f, newFakeFabrics())
	b.Run("warm", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			d, err := h.Resolve(nqns[i%len(nqns)], 1)
			if err != nil || d.Name != fmt.Sprintf("nvme%dn1", i%len(nqns)) {
				b.Fatalf("Resolve = %v, %v", d, err)
			}
		}
	})
	b.Run("cold-worst", func(b *testing.B) {
		names, err := readDirNames(h.sys.subsystemClassDir())
		if err != nil {
			b.Fatal(err)
		}
		var last int
		fmt.Sscanf(names[len(names)-1], "nvme-subsys%d", &last)
		for i := 0; i < b.N; i++ {
			h.sys.hints.Clear()
			d, err := h.Resolve(nqns[last], 1)
			if err != nil || d.Name != fmt.Sprintf("nvme%dn1", last) {
				b.Fatalf("Resolve = %v, %v", d, err)
			}
		}
	})
}

// The lookup hint must never return a subsystem whose number was reused by another NQN.
func TestResolveAfterRenumberingIgnoresStaleHint(t *testing.T) {
	f := newFakeSys(t)
	f.addSubsystem(0, testPrefix+"a").addController(0, 0, ctrlSpec{})
	f.addHead(0, 1, 1, 100)
	h := newTestHost(t, f, newFakeFabrics())
	if d, err := h.Resolve(testPrefix+"a", 1); err != nil || d.Name != "nvme0n1" {
		t.Fatalf("first Resolve = %v, %v", d, err)
	}
	// a's controller is lost; b connects and gets nvme-subsys0; a comes back as nvme-subsys1.
	f.removeController(0)
	f.addSubsystem(0, testPrefix+"b").addController(0, 0, ctrlSpec{})
	f.addHead(0, 1, 1, 200)
	if d, err := h.Resolve(testPrefix+"a", 1); !errors.Is(err, ErrNotConnected) {
		t.Fatalf("Resolve(a) while only b exists = %+v, %v; want ErrNotConnected", d, err)
	}
	f.addSubsystem(1, testPrefix+"a").addController(1, 1, ctrlSpec{})
	f.addHead(1, 1, 1, 300)
	d, err := h.Resolve(testPrefix+"a", 1)
	if err != nil || d.Name != "nvme1n1" || d.SizeBytes != 300*512 {
		t.Fatalf("Resolve(a) after renumbering = %+v, %v; want nvme1n1", d, err)
	}
}

func TestMultipath(t *testing.T) {
	for _, tc := range []struct {
		name    string
		param   string // "" = no parameter file
		module  bool   // the nvme_core module directory exists
		want    bool
		wantErr bool
	}{
		{name: "on", param: "Y", module: true, want: true},
		{name: "off", param: "N", module: true, want: false},
		{name: "built without multipath support", module: true, want: false},
		{name: "nvme_core not loaded", wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeSys(t)
			if tc.module {
				must(os.MkdirAll(filepath.Join(f.root, "module/nvme_core/parameters"), 0o755))
			}
			if tc.param != "" {
				writeFiles(filepath.Join(f.root, "module/nvme_core/parameters"), map[string]string{"multipath": tc.param})
			}
			got, err := newTestHost(t, f, newFakeFabrics()).Multipath()
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Fatalf("Multipath() = %v, %v; want %v (error: %v)", got, err, tc.want, tc.wantErr)
			}
		})
	}
}
