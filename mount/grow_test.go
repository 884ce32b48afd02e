package mount

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
	"srvlab.io/rds-csi/internal/loopdev"
)

// hasCapability reads the effective capability set from /proc.
func hasCapability(t *testing.T, capability int) bool {
	t.Helper()
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.SplitSeq(string(status), "\n") {
		if hex, ok := strings.CutPrefix(line, "CapEff:"); ok {
			effective, err := strconv.ParseUint(strings.TrimSpace(hex), 16, 64)
			if err != nil {
				t.Fatal(err)
			}
			return effective&(1<<capability) != 0
		}
	}
	t.Fatal("no CapEff line in /proc/self/status")
	return false
}

func TestGrowOnline(t *testing.T) {
	requireLoop(t)
	for _, fstype := range []string{"ext4", "xfs"} {
		t.Run(fstype, func(t *testing.T) {
			ctx := testCtx(t)
			dev, img := blankFormatted(t, fstype)
			target := mountPoint(t)
			if err := Mount(ctx, dev.Path, target, fstype, Options{}); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(target, "kept"), []byte("before the grow"), 0o600); err != nil {
				t.Fatal(err)
			}
			before, err := StatContext(ctx, target)
			if err != nil {
				t.Fatal(err)
			}

			if err := os.Truncate(img, 2*minSize[fstype]); err != nil {
				t.Fatal(err)
			}
			if err := loopdev.SetCapacity(dev.Path); err != nil {
				t.Fatal(err)
			}
			if fstype == "ext4" && !hasCapability(t, unix.CAP_SYS_RESOURCE) {
				// Sandboxes drop CAP_SYS_RESOURCE, and the kernel refuses
				// online ext4 resize without it; the node plugin runs
				// privileged. Here the error must say exactly that.
				err := Grow(ctx, dev.Path, target, fstype)
				if err == nil || !strings.Contains(err.Error(), "CAP_SYS_RESOURCE") {
					t.Fatalf("Grow without CAP_SYS_RESOURCE = %v, want an error naming it", err)
				}
				t.Log("online ext4 grow not exercised: this process lacks CAP_SYS_RESOURCE")
				return
			}
			if err := Grow(ctx, dev.Path, target, fstype); err != nil {
				t.Fatal(err)
			}
			after, err := StatContext(ctx, target)
			if err != nil {
				t.Fatal(err)
			}
			if grown := after.TotalBytes - before.TotalBytes; grown < minSize[fstype]*9/10 {
				t.Fatalf("total grew by %d bytes (%d → %d), want about %d", grown, before.TotalBytes, after.TotalBytes, minSize[fstype])
			}
			if got, err := os.ReadFile(filepath.Join(target, "kept")); err != nil || string(got) != "before the grow" {
				t.Fatalf("data after grow: %q, %v", got, err)
			}
			if err := Grow(ctx, dev.Path, target, fstype); err != nil {
				t.Fatalf("second Grow = %v, want nil (nothing to do)", err)
			}
		})
	}
}

func TestGrowRefuses(t *testing.T) {
	requireLoop(t)
	ctx := testCtx(t)
	dev := formattedLoop(t, "ext4")
	other, target := mountedLoop(t, "ext4")
	cases := []struct {
		name, device, mountPoint, fstype, wantErr string
	}{
		{"another device is mounted there", dev.Path, target, "ext4", "not " + dev.Path},
		{"nothing is mounted there", dev.Path, t.TempDir(), "ext4", "nothing is mounted"},
		{"not a block device", newImage(t, mib), target, "ext4", "not a block device"},
		{"unsupported type", other.Path, target, "btrfs", "unsupported"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			guarded := fsTools{open: openDevice, run: forbidTools(t)}
			err := guarded.grow(ctx, tc.device, tc.mountPoint, tc.fstype)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("grow = %v, want an error containing %q", err, tc.wantErr)
			}
		})
	}
}
