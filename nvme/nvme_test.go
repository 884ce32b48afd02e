package nvme

import (
	"errors"
	"strconv"
	"strings"
	"testing"
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
