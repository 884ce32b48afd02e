package mount

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestStormGuardCheck(t *testing.T) {
	// A table with n mounts of 259:7 and one of 259:8.
	tableWith := func(t *testing.T, n int) table {
		var sb strings.Builder
		sb.WriteString("27 1 254:0 / / rw - ext4 /dev/vda rw\n")
		for i := range n {
			fmt.Fprintf(&sb, "%d 27 259:7 / /pods/%d rw - ext4 /dev/nvme1n1 rw\n", 100+i, i)
		}
		sb.WriteString("99 27 259:8 / /other rw - ext4 /dev/nvme2n1 rw\n")
		path := filepath.Join(t.TempDir(), "mountinfo")
		if err := os.WriteFile(path, []byte(sb.String()), 0o600); err != nil {
			t.Fatal(err)
		}
		return fileTable(path)
	}
	cases := []struct {
		name    string
		guard   StormGuard
		mounts  int
		minor   uint32
		refused bool
	}{
		{"default limit, 99 mounts", StormGuard{}, 99, 7, false},
		{"default limit, 100 mounts", StormGuard{}, 100, 7, true},
		{"negative limit means default", StormGuard{Limit: -1}, 100, 7, true},
		{"limit 3, 2 mounts", StormGuard{Limit: 3}, 2, 7, false},
		{"limit 3, 3 mounts", StormGuard{Limit: 3}, 3, 7, true},
		{"limit 3, other device", StormGuard{Limit: 3}, 50, 8, false},
		{"limit 1, first mount", StormGuard{Limit: 1}, 0, 7, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.guard.check(testCtx(t), tableWith(t, tc.mounts), 259, tc.minor)
			if tc.refused != errors.Is(err, ErrMountStorm) {
				t.Fatalf("check = %v, want refused %v", err, tc.refused)
			}
			if tc.refused && !strings.Contains(err.Error(), "/proc/self/mountinfo") {
				t.Errorf("error %q does not say where to look", err)
			}
			if !tc.refused && err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestStormGuardRefusesRealMounts(t *testing.T) {
	requireLoop(t)
	ctx := testCtx(t)
	dev := formattedLoop(t, "ext4")
	guard := StormGuard{Limit: 3}
	staging := mountPoint(t)
	if err := guard.Mount(ctx, dev.Path, staging, "ext4", Options{}); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := guard.Bind(ctx, staging, mountPoint(t), false); err != nil {
			t.Fatal(err)
		}
	}
	if err := guard.check(ctx, processTable, dev.Major, dev.Minor); !errors.Is(err, ErrMountStorm) {
		t.Errorf("check with 3 mounts and limit 3 = %v, want ErrMountStorm", err)
	}
	extra := mountPoint(t)
	if err := guard.Bind(ctx, staging, extra, false); !errors.Is(err, ErrMountStorm) {
		t.Errorf("fourth Bind = %v, want ErrMountStorm", err)
	}
	if err := guard.Mount(ctx, dev.Path, extra, "ext4", Options{}); !errors.Is(err, ErrMountStorm) {
		t.Errorf("fourth Mount = %v, want ErrMountStorm", err)
	}
	if n := len(mountedAt(t, extra)); n != 0 {
		t.Errorf("a refused mount left %d entries", n)
	}
	if err := Bind(ctx, staging, extra, false); err != nil {
		t.Errorf("Bind with the default limit = %v, want nil", err)
	}
}
