package mount

import (
	"os"
	"path/filepath"
	"testing"
)

func TestStat(t *testing.T) {
	requireLoop(t)
	ctx := testCtx(t)
	_, target := mountedLoop(t, "ext4")
	before, err := StatContext(ctx, target)
	if err != nil {
		t.Fatal(err)
	}
	if before.TotalBytes <= 0 || before.TotalBytes > minSize["ext4"] || before.AvailableBytes > before.TotalBytes ||
		before.UsedBytes < 0 || before.TotalInodes <= 0 || before.UsedInodes+before.FreeInodes != before.TotalInodes {
		t.Fatalf("inconsistent stats for an empty %d-byte filesystem: %+v", minSize["ext4"], before)
	}
	const written = 4 << 20
	f, err := os.Create(filepath.Join(target, "data"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(make([]byte, written)); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	after, err := StatContext(ctx, target)
	if err != nil {
		t.Fatal(err)
	}
	if after.UsedBytes-before.UsedBytes < written || before.AvailableBytes-after.AvailableBytes < written {
		t.Errorf("writing %d bytes moved used %d → %d, available %d → %d", written,
			before.UsedBytes, after.UsedBytes, before.AvailableBytes, after.AvailableBytes)
	}
	if after.UsedInodes != before.UsedInodes+1 {
		t.Errorf("used inodes %d → %d, want one more", before.UsedInodes, after.UsedInodes)
	}
	if _, err := StatContext(ctx, filepath.Join(target, "missing")); err == nil {
		t.Error("StatContext of a missing path succeeded")
	}
}
