package mount

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestBounded(t *testing.T) {
	stuck := make(chan struct{})
	t.Cleanup(func() { close(stuck) })
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()

	cases := []struct {
		name    string
		ctx     context.Context
		timeout time.Duration
		fn      func() (int, error)
		want    int
		wantErr error
	}{
		{"returns the value", context.Background(), time.Second, func() (int, error) { return 7, nil }, 7, nil},
		{"returns the error", context.Background(), time.Second, func() (int, error) { return 0, errBoom }, 0, errBoom},
		{"stuck call hits the deadline", context.Background(), 50 * time.Millisecond,
			func() (int, error) { <-stuck; return 1, nil }, 0, context.DeadlineExceeded},
		{"cancelled before start", cancelled, time.Second,
			func() (int, error) { t.Error("fn ran after cancel"); return 1, nil }, 0, context.Canceled},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(tc.ctx, tc.timeout)
			defer cancel()
			start := time.Now()
			got, err := bounded(ctx, "test call", tc.fn)
			if got != tc.want || !errors.Is(err, tc.wantErr) {
				t.Errorf("bounded = %d, %v; want %d, %v", got, err, tc.want, tc.wantErr)
			}
			if elapsed := time.Since(start); elapsed > tc.timeout+time.Second {
				t.Errorf("took %v, want at most about %v", elapsed, tc.timeout)
			}
		})
	}
}

func TestWithDefaultDeadline(t *testing.T) {
	ctx, cancel := withDefaultDeadline(context.Background(), time.Minute)
	defer cancel()
	if d, ok := ctx.Deadline(); !ok || time.Until(d) > time.Minute {
		t.Errorf("no-deadline context got deadline %v, %v; want about a minute", d, ok)
	}
	parent, cancelParent := context.WithTimeout(context.Background(), time.Second)
	defer cancelParent()
	ctx, cancel = withDefaultDeadline(parent, time.Hour)
	defer cancel()
	if d, _ := ctx.Deadline(); time.Until(d) > time.Second {
		t.Errorf("the caller's deadline was replaced: %v", d)
	}
}

var errBoom = errors.New("boom")

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
