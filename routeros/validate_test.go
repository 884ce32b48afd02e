package routeros

import (
	"errors"
	"strings"
	"testing"
)

func TestValidateSlot(t *testing.T) {
	cases := []struct {
		slot string
		ok   bool
	}{
		{"pvc-42f0d924-8c1e-4d67-9a1b-0123456789ab", true},
		{"a", true},
		{"vm-storage-001", true},
		{strings.Repeat("a", 64), true},
		{strings.Repeat("a", 65), false},
		{"", false},
		{"-pvc", false},
		{"pvc-", false},
		{"PVC-1", false},
		{"pvc_1", false},
		{"pvc 1", false},
		{`pvc"1`, false},
		{"pvc;1", false},
		{"pvc[1]", false},
		{"pvc$x", false},
		{"pvc\n1", false},
		{"pvc/1", false},
	}
	for _, c := range cases {
		err := ValidateSlot(c.slot)
		if (err == nil) != c.ok {
			t.Errorf("ValidateSlot(%q) = %v, want ok=%v", c.slot, err, c.ok)
		}
		if err != nil && !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("ValidateSlot(%q): %v is not ErrInvalidArgument", c.slot, err)
		}
	}
}

func TestValidatePath(t *testing.T) {
	cases := []struct {
		path  string
		bases []string
		ok    bool
	}{
		{"/storage-pool/metal-csi/pvc-1.img", nil, true},
		{"/storage-pool/metal-csi/.snapshots/snap-1.img", nil, true},
		{"/storage-pool/x", nil, true},
		{"/storage-pool/metal-csi/pvc-1.img", []string{"/storage-pool/metal-csi"}, true},
		{"/storage-pool/metal-csi/pvc-1.img", []string{"/other", "/storage-pool/metal-csi/"}, true},
		{"/storage-pool/metal-csi", []string{"/storage-pool/metal-csi"}, false}, // the base itself
		{"/storage-pool/metal-csi-2/pvc.img", []string{"/storage-pool/metal-csi"}, false},
		{"/storage-pool/metal/pvc.img", []string{"/storage-pool/metal-csi"}, false},
		{"/storage-pool", nil, false},
		{"/", nil, false},
		{"", nil, false},
		{"storage-pool/x.img", nil, false},
		{"/storage-pool/../etc/x", nil, false},
		{"/storage-pool/./x", nil, false},
		{"/storage-pool//x", nil, false},
		{"/storage-pool/x/", nil, false},
		{"/storage-pool/a b", nil, false},
		{`/storage-pool/a"b`, nil, false},
		{"/storage-pool/a$b", nil, false},
		{"/storage-pool/a;b", nil, false},
		{"/storage-pool/[a]", nil, false},
		{"/storage-pool/a\nb", nil, false},
		{"/storage-pool/é", nil, false},
		{"/p/" + strings.Repeat("a", 256), nil, false},
		{"/p" + strings.Repeat("/a", 600), nil, false},
	}
	for _, c := range cases {
		err := ValidatePath(c.path, c.bases...)
		if (err == nil) != c.ok {
			t.Errorf("ValidatePath(%q, %q) = %v, want ok=%v", c.path, c.bases, err, c.ok)
		}
		if err != nil && !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("ValidatePath(%q): %v is not ErrInvalidArgument", c.path, err)
		}
	}
}

func TestValidateNQN(t *testing.T) {
	cases := []struct {
		nqn string
		ok  bool
	}{
		{"nqn.2000-02.com.mikrotik:pvc-42f0d924-8c1e-4d67-9a1b-0123456789ab", true},
		{"nqn.2026-09.com.mikrotik:rds2216.vm-storage-001", true},
		{"nqn.2014-08.org.nvmexpress:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6", true},
		{"nqn.2014-08.org.nvmexpress.discovery", true},
		{"nqn.2000-02.com.mikrotik:" + strings.Repeat("a", 223-25), true},
		{"nqn.2000-02.com.mikrotik:" + strings.Repeat("a", 224-25), false},
		{"", false},
		{"pvc-1", false},
		{"nqn.", false},
		{"nqn.20x0-02.com.mikrotik:a", false},
		{"nqn.2000-13.com.mikrotik:a", false},
		{"nqn.2000-00.com.mikrotik:a", false},
		{"nqn.2000-02.:a", false},
		{"nqn.2000-02..com:a", false},
		{"nqn.2000-02.com.mikrotik:", false},
		{"nqn.2000-02.com.mikrotik:a b", false},
		{`nqn.2000-02.com.mikrotik:a"b`, false},
		{"nqn.2000-02.com.mikrotik:a$b", false},
		{"nqn.2000-02.com.mikrotik:a;b", false},
		{"nqn.2000-02.com.mikrotik:a]b", false},
		{"nqn.2000-02.com.mikrotik:a\nb", false},
		{"nqn.2000-02.com/mikrotik:a", false},
	}
	for _, c := range cases {
		err := ValidateNQN(c.nqn)
		if (err == nil) != c.ok {
			t.Errorf("ValidateNQN(%q) = %v, want ok=%v", c.nqn, err, c.ok)
		}
		if err != nil && !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("ValidateNQN(%q): %v is not ErrInvalidArgument", c.nqn, err)
		}
	}
}
