package nvme

import (
	"context"
	"errors"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestValidatePrefix(t *testing.T) {
	tests := []struct {
		prefix  string
		wantErr string // substring of the error; "" = valid
	}{
		{"nqn.2000-02.com.mikrotik:pvc-", ""},
		{"nqn.2000-02.com.mikrotik:p", ""},
		{"pvc-", ""},
		{"rds-volume-", ""},
		{"0abc", ""},
		{"", "is empty"},
		{"nqn.2000-02.com.mikrotik", "has no ':'"},
		{"nqn.2000-02.com.mikrotik:", "ends at the ':'"},
		{"nqn.:pvc-", "no naming authority"},
		{"nqn.2000-02.com.mikrotik:pvc-,hostnqn=x", "contains a ','"},
		{"nqn.2000-02.com.mikrotik:pvc -", "control or space"},
		{"nqn.2000-02.com.mikrotik:" + strings.Repeat("a", 200), "is 225 bytes"},
		{"pvc", "too short"},
		{"p-", "too short"},
		{"PVC-", "neither an NQN prefix"},
		{"pvc_", "neither an NQN prefix"},
		{"-pvc", "neither an NQN prefix"},
		{"nqn", "too short"},
		{"nqn-", ""}, // slot prefix: four [a-z0-9-] characters
	}
	for _, tt := range tests {
		t.Run(tt.prefix, func(t *testing.T) {
			err := ValidatePrefix(tt.prefix)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("ValidatePrefix(%q) = %v, want nil", tt.prefix, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("ValidatePrefix(%q) = %v, want error containing %q", tt.prefix, err, tt.wantErr)
			}
			if !strings.Contains(err.Error(), "e.g.") {
				t.Errorf("error %q does not show how to fix it", err)
			}
		})
	}
}

func TestNewGuardRejectsInvalidPrefix(t *testing.T) {
	if g, err := NewGuard(""); err == nil || g != nil {
		t.Fatalf("NewGuard(\"\") = %v, %v; want nil guard and an error", g, err)
	}
}

func TestGuardManages(t *testing.T) {
	const mikrotik = "nqn.2000-02.com.mikrotik:"
	tests := []struct {
		prefix string
		nqn    string
		want   bool
	}{
		{mikrotik + "pvc-", mikrotik + "pvc-1", true},
		{mikrotik + "pvc-", mikrotik + "pvc-0b3c1c4e-6d7e-4c4f-9a4e-1f6a3c2d9e10", true},
		{mikrotik + "pvc-", mikrotik + "pvc-", false}, // the prefix alone names no volume
		{mikrotik + "pvc-", mikrotik + "pvc", false},  // shorter than the prefix
		{mikrotik + "pvc-", mikrotik + "nixos-var", false},
		{mikrotik + "pvc-", "nqn.2024-01.io.nixos:var", false},
		{mikrotik + "pvc-", "NQN.2000-02.com.mikrotik:pvc-1", false},
		{mikrotik + "pvc-", mikrotik + "pvc-1,hostnqn=evil", false},
		{mikrotik + "pvc-", mikrotik + "pvc-1\n", false},
		{mikrotik + "pvc-", mikrotik + "pvc-" + strings.Repeat("a", 200), false},
		{mikrotik + "pvc-", "", false},
		{"pvc-", mikrotik + "pvc-1", true},
		{"pvc-", "nqn.2024-01.io.example:pvc-1", true},
		{"pvc-", "nqn.2024-01.io.nixos:var", false},
		{"pvc-", "nqn.2024-01.io.nixos:var:pvc-1", true}, // the slot is after the last ':'
		{"pvc-", "nqn.2024-01.io.pvc-:var", false},       // the prefix elsewhere does not count
		{"pvc-", "nqn.2024-01.io.example:pvc-", false},
		// RouterOS before 7.21: the subsystem NQN is the bare slot name.
		{"pvc-", "pvc-1", true},
		{"pvc-", "pvc-", false},
		{"pvc-", "var", false},
		{"pvc-", "pvc-1,hostnqn=evil", false},
		{"pvc-", "PVC-1", false},
		{mikrotik + "pvc-", "pvc-1", false}, // an NQN prefix never matches bare slot names
	}
	for _, tt := range tests {
		t.Run(tt.prefix+"|"+tt.nqn, func(t *testing.T) {
			g, err := NewGuard(tt.prefix)
			if err != nil {
				t.Fatal(err)
			}
			if got := g.Manages(tt.nqn); got != tt.want {
				t.Fatalf("Manages(%q) = %v, want %v", tt.nqn, got, tt.want)
			}
			err = g.Check(tt.nqn)
			if tt.want != (err == nil) {
				t.Fatalf("Check(%q) = %v, want managed=%v", tt.nqn, err, tt.want)
			}
			if err != nil {
				if !errors.Is(err, ErrNotManaged) {
					t.Errorf("Check(%q) error %v does not wrap ErrNotManaged", tt.nqn, err)
				}
				if !strings.Contains(err.Error(), strconv.Quote(tt.nqn)) {
					t.Errorf("Check error %q does not name the NQN", err)
				}
			}
			if g.Prefix() != tt.prefix {
				t.Errorf("Prefix() = %q, want %q", g.Prefix(), tt.prefix)
			}
		})
	}
}

func TestNilGuardManagesNothing(t *testing.T) {
	var g *Guard
	if g.Manages("nqn.2000-02.com.mikrotik:pvc-1") {
		t.Fatal("a nil guard must manage nothing")
	}
	if err := g.Check("nqn.2000-02.com.mikrotik:pvc-1"); !errors.Is(err, ErrNotManaged) {
		t.Fatalf("nil guard Check = %v, want ErrNotManaged", err)
	}
}

// A diskless node boots its own /var over NVMe/TCP. Whatever the driver does, that
// subsystem (and any other outside the managed prefix) must be left exactly as it was:
// not one attribute written, not one file changed, even when it is reconnecting, unused
// and unclaimed, and even when it is asked for by name.
func TestUnmanagedSubsystemsSurviveEveryOperation(t *testing.T) {
	vol := testPrefix + "a"
	for _, state := range []string{"live", "connecting", "deleting (no IO)"} {
		t.Run(state, func(t *testing.T) {
			f := newFakeSys(t)
			f.addSubsystem(0, nixosVar).addController(0, 0, ctrlSpec{state: state})
			varDisk := f.addHead(0, 1, 1, 100)
			f.addSubsystem(1, mikrotik+"nixos-var").addController(1, 1, ctrlSpec{state: state})
			f.addDirect(1, 1, 1, 100)
			untouched := func() string {
				return f.snapshot(f.ctrlDir(0), f.subsysDir(0), f.ctrlDir(1), f.subsysDir(1),
					filepath.Join(f.dev, varDisk), filepath.Join(f.dev, "nvme1n1"))
			}
			before := untouched()
			k := &fakeKernel{f: f, exports: map[string][]int{vol: {1}}}
			ff := newFakeFabrics()
			ff.connectFn = k.connect
			h := newTestHost(t, f, ff)
			h.settle = 10 * time.Millisecond
			ctx := context.Background()

			if _, err := h.Connect(ctx, Target{Address: "10.0.0.1", NQN: vol}, Options{}); err != nil {
				t.Fatalf("Connect: %v", err)
			}
			if _, err := h.Resolve(vol, 1); err != nil {
				t.Fatalf("Resolve: %v", err)
			}
			if _, err := h.Health(vol); err != nil {
				t.Fatalf("Health: %v", err)
			}
			if _, err := h.Rescan(ctx, vol, 1); err != nil {
				t.Fatalf("Rescan: %v", err)
			}
			if _, err := h.Subsystems(); err != nil {
				t.Fatalf("Subsystems: %v", err)
			}
			if err := h.Disconnect(ctx, vol); err != nil {
				t.Fatalf("Disconnect: %v", err)
			}
			rep, err := h.Sweep(ctx, nil, map[string]bool{nixosVar: true, mikrotik + "nixos-var": true}, func(Disk) bool { return false })
			if err != nil || len(rep.Disconnected) != 0 || len(rep.Kept) != 2 {
				t.Fatalf("Sweep = %+v, %v; want both unmanaged subsystems kept", rep, err)
			}
			for _, nqn := range []string{nixosVar, mikrotik + "nixos-var"} {
				if _, err := h.Connect(ctx, Target{Address: "10.0.0.1", NQN: nqn}, Options{}); !errors.Is(err, ErrNotManaged) {
					t.Errorf("Connect(%s) = %v", nqn, err)
				}
				if err := h.Disconnect(ctx, nqn); !errors.Is(err, ErrNotManaged) {
					t.Errorf("Disconnect(%s) = %v", nqn, err)
				}
				if _, err := h.Rescan(ctx, nqn, 1); !errors.Is(err, ErrNotManaged) {
					t.Errorf("Rescan(%s) = %v", nqn, err)
				}
				if _, err := h.Resolve(nqn, 1); !errors.Is(err, ErrNotManaged) {
					t.Errorf("Resolve(%s) = %v", nqn, err)
				}
				if _, err := h.Health(nqn); !errors.Is(err, ErrNotManaged) {
					t.Errorf("Health(%s) = %v", nqn, err)
				}
			}

			if after := untouched(); after != before {
				t.Errorf("unmanaged subsystems changed:\nbefore:\n%s\nafter:\n%s", before, after)
			}
			for _, w := range f.writeLog() {
				if strings.Contains(w, "/nvme0/") || strings.Contains(w, "/nvme1/") {
					t.Errorf("wrote to an unmanaged controller: %s", w)
				}
			}
			for _, opts := range ff.writes() {
				if !strings.Contains(opts, "nqn="+vol+",") {
					t.Errorf("connect string for another NQN written: %s", opts)
				}
			}
		})
	}
}
