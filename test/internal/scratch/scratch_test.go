package scratch

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"srvlab.io/rds-csi/internal/testenv"
)

func TestRemoveUnmountedNeverWalksIntoAMount(t *testing.T) {
	if os.Geteuid() != 0 {
		testenv.Missing(t, "needs root to mount a tmpfs")
	}
	dir := t.TempDir()
	work := filepath.Join(dir, "work")
	inner := filepath.Join(work, "kubelet", "volume")
	if err := os.MkdirAll(inner, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", inner, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Unmount(inner, unix.MNT_DETACH) })
	data := filepath.Join(inner, "data")
	if err := os.WriteFile(data, []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}

	mps, err := MountsUnder(work)
	if err != nil || len(mps) != 1 || mps[0] != inner {
		t.Fatalf("MountsUnder = %v, %v; want [%s]", mps, err, inner)
	}
	if err := RemoveUnmounted(work); err == nil || !strings.Contains(err.Error(), inner) {
		t.Fatalf("RemoveUnmounted with a mount below: %v, want a refusal naming %s", err, inner)
	}
	if b, err := os.ReadFile(data); err != nil || string(b) != "keep" {
		t.Fatalf("data in the mount: %q, %v", b, err)
	}

	if err := unix.Unmount(inner, 0); err != nil {
		t.Fatal(err)
	}
	if err := RemoveUnmounted(work); err != nil {
		t.Fatalf("RemoveUnmounted with nothing mounted: %v", err)
	}
	if _, err := os.Stat(work); !os.IsNotExist(err) {
		t.Fatalf("%s still there: %v", work, err)
	}
	if mps, err := MountsUnder(filepath.Join(dir, "elsewhere")); err != nil || len(mps) != 0 {
		t.Fatalf("MountsUnder of an unmounted path = %v, %v", mps, err)
	}
}
