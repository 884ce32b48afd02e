package mount

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"golang.org/x/sys/unix"
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

// syntheticMountinfo has stacked mounts, bind mounts of one device, a path
// with an escaped space and a prefix look-alike, as a real node shows them.
const syntheticMountinfo = `27 1 254:0 / / rw,relatime - ext4 /dev/vda rw
24 27 0:6 / /dev rw,relatime - devtmpfs devtmpfs rw,size=1k,mode=755
100 27 259:3 / /var/lib/kubelet/plugins/kubernetes.io/csi/rds.csi.srvlab.io/abc/globalmount rw,relatime shared:50 - ext4 /dev/nvme1n1 rw
101 27 259:3 / /var/lib/kubelet/pods/p1/volumes/kubernetes.io~csi/pvc-1/mount rw,relatime shared:50 - ext4 /dev/nvme1n1 rw
102 101 259:3 / /var/lib/kubelet/pods/p1/volumes/kubernetes.io~csi/pvc-1/mount ro,relatime shared:50 - ext4 /dev/nvme1n1 rw
103 27 259:4 / /mnt/with\040space rw - xfs /dev/nvme2n1 rw
104 27 259:5 / /mnt/with rw - xfs /dev/nvme3n1 rw
105 27 259:35 / /mnt/other rw - xfs /dev/nvme4n1 rw
`

func TestMountinfoFilters(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "mountinfo")
	if err := os.WriteFile(path, []byte(syntheticMountinfo), 0o600); err != nil {
		t.Fatal(err)
	}
	tbl := fileTable(path)
	ctx := context.Background()

	mountPoints := []struct {
		path    string
		wantIDs []int
	}{
		{"/", []int{27}},
		{"/var/lib/kubelet/pods/p1/volumes/kubernetes.io~csi/pvc-1/mount", []int{101, 102}},
		{"/var/lib/kubelet/pods/p1/volumes/kubernetes.io~csi/pvc-1/mount/", []int{101, 102}},
		{"/mnt/with space", []int{103}},
		{"/mnt/with", []int{104}},
		{"/mnt/wit", nil},
		{"/mnt", nil},
	}
	for _, tc := range mountPoints {
		t.Run("mountpoint "+tc.path, func(t *testing.T) {
			got, err := tbl.byMountPoint(ctx, tc.path)
			if err != nil {
				t.Fatal(err)
			}
			if ids := entryIDs(got); fmt.Sprint(ids) != fmt.Sprint(tc.wantIDs) {
				t.Errorf("byMountPoint(%q) = %v, want %v", tc.path, ids, tc.wantIDs)
			}
		})
	}

	sources := []struct {
		major, minor uint32
		wantIDs      []int
	}{
		{259, 3, []int{100, 101, 102}},
		{259, 35, []int{105}},
		{259, 5, []int{104}},
		{254, 1, nil},
		{0, 6, []int{24}},
	}
	for _, tc := range sources {
		t.Run(fmt.Sprintf("source %d:%d", tc.major, tc.minor), func(t *testing.T) {
			got, err := tbl.bySource(ctx, tc.major, tc.minor)
			if err != nil {
				t.Fatal(err)
			}
			if ids := entryIDs(got); fmt.Sprint(ids) != fmt.Sprint(tc.wantIDs) {
				t.Errorf("bySource(%d:%d) = %v, want %v", tc.major, tc.minor, ids, tc.wantIDs)
			}
		})
	}
}

func entryIDs(entries []*Entry) []int {
	var ids []int
	for _, e := range entries {
		ids = append(ids, e.ID)
	}
	return ids
}

// blockingReader never returns from Read until released, like a read of
// /proc that is stuck behind a hung mount.
type blockingReader struct{ release chan struct{} }

func (b blockingReader) Read([]byte) (int, error) { <-b.release; return 0, io.EOF }
func (b blockingReader) Close() error             { return nil }

func TestMountinfoUnreadableIsAnError(t *testing.T) {
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })

	cases := []struct {
		name string
		open func() (io.ReadCloser, error)
	}{
		{"read hangs", func() (io.ReadCloser, error) { return blockingReader{release}, nil }},
		{"open hangs", func() (io.ReadCloser, error) { <-release; return nil, errors.New("released") }},
		{"open fails", func() (io.ReadCloser, error) { return nil, os.ErrPermission }},
		{"read fails midway", func() (io.ReadCloser, error) {
			r := io.MultiReader(strings.NewReader("27 1 254:0 / / rw - ext4 /dev/vda rw\n"), iotest.ErrReader(errors.New("EIO")))
			return io.NopCloser(r), nil
		}},
		{"malformed line", func() (io.ReadCloser, error) {
			return io.NopCloser(strings.NewReader("27 1 254:0 / /x rw ext4\n")), nil
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tbl := table{open: tc.open}
			ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
			defer cancel()
			start := time.Now()
			entries, err := tbl.byMountPoint(ctx, "/x")
			if err == nil {
				t.Fatalf("byMountPoint returned %d entries and no error; an unreadable table must be an error", len(entries))
			}
			if _, err := tbl.bySource(ctx, 254, 0); err == nil {
				t.Fatal("bySource returned no error on an unreadable table")
			}
			if elapsed := time.Since(start); elapsed > 2*time.Second {
				t.Errorf("took %v, want about the 100ms deadline", elapsed)
			}
		})
	}
}

func TestMountinfoProcess(t *testing.T) {
	ctx := context.Background()
	all, err := List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(all) == 0 {
		t.Fatal("List returned an empty mount table")
	}
	cases := []struct {
		path    string
		want    bool
		wantErr bool
	}{
		{"/", true, false},
		{"/proc", true, false},
		{t.TempDir(), false, false},
		{"relative/path", false, true},
		{"", false, true},
	}
	for _, tc := range cases {
		got, err := IsMounted(ctx, tc.path)
		if (err != nil) != tc.wantErr || got != tc.want {
			t.Errorf("IsMounted(%q) = %v, %v; want %v, error %v", tc.path, got, err, tc.want, tc.wantErr)
		}
	}
	var st unix.Stat_t
	if err := unix.Stat("/proc", &st); err != nil {
		t.Fatal(err)
	}
	major, minor := unix.Major(st.Dev), unix.Minor(st.Dev)
	entries, err := BySource(ctx, major, minor)
	if err != nil {
		t.Fatal(err)
	}
	if !containsMountPoint(entries, "/proc") {
		t.Errorf("BySource(%d:%d) = %v, want it to contain /proc", major, minor, entries)
	}
}

func containsMountPoint(entries []*Entry, mp string) bool {
	for _, e := range entries {
		if e.Mountpoint == mp {
			return true
		}
	}
	return false
}

// BenchmarkLookup10000 looks one mount point up in a 10 000-line table,
// the size a node reaches with many pods (target: well under 10 ms/op).
func BenchmarkLookup10000(b *testing.B) {
	path := filepath.Join(b.TempDir(), "mountinfo")
	var sb strings.Builder
	for i := range 10000 {
		fmt.Fprintf(&sb, "%d 27 259:%d / /var/lib/kubelet/pods/pod-%d/volumes/kubernetes.io~csi/pvc-%d/mount rw,relatime shared:%d - ext4 /dev/nvme%dn1 rw,discard\n",
			100+i, i%1000, i, i, i, i%1000)
	}
	if err := os.WriteFile(path, []byte(sb.String()), 0o600); err != nil {
		b.Fatal(err)
	}
	tbl := fileTable(path)
	target := "/var/lib/kubelet/pods/pod-9999/volumes/kubernetes.io~csi/pvc-9999/mount"
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		got, err := tbl.byMountPoint(ctx, target)
		if err != nil || len(got) != 1 {
			b.Fatalf("byMountPoint = %d entries, %v", len(got), err)
		}
	}
}
