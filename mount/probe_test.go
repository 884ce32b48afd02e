package mount

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"srvlab.io/rds-csi/internal/loopdev"
	"srvlab.io/rds-csi/internal/testenv"
)

// probeFixture builds a file image that a probe must classify.
type probeFixture struct {
	name       string
	size       int64
	build      func(t *testing.T, path string)
	want       Kind
	wantDetail string
}

func mkfsFixture(fstype string) func(*testing.T, string) {
	return func(t *testing.T, path string) { mkfs(t, fstype, path) }
}

// zeroEdges wipes the first and last MiB, as a damaged or half-wiped
// volume looks: the data inside must still stop a format.
func zeroEdges(t *testing.T, path string) {
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	writeAt(t, path, 0, make([]byte, mib))
	writeAt(t, path, st.Size()-mib, make([]byte, mib))
}

func setByte(off int64) func(*testing.T, string) {
	return func(t *testing.T, path string) { writeAt(t, path, off, []byte{1}) }
}

func randomData(t *testing.T, path string) {
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	data := make([]byte, st.Size())
	rng := rand.NewChaCha8([32]byte{1})
	_, _ = rng.Read(data)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

func probeFixtures() []probeFixture {
	nothing := func(*testing.T, string) {}
	return []probeFixture{
		{"zeroed 64 MiB", 64 * mib, nothing, KindBlank, "are zero"},
		{"zeroed 3 GiB sparse", 3 << 30, nothing, KindBlank, "are zero"},
		{"zeroed exactly 1 MiB", mib, nothing, KindBlank, "are zero"},
		{"zeroed odd size", 5*mib + 123, nothing, KindBlank, "are zero"},
		{"ext4", 64 * mib, mkfsFixture("ext4"), KindExt4, "ext4 superblock at offset 1024"},
		{"ext3", 64 * mib, mkfsFixture("ext3"), KindExt3, "ext3 superblock"},
		{"ext2", 64 * mib, mkfsFixture("ext2"), KindExt2, "ext2 superblock"},
		{"ext4 with a dirty journal", 64 * mib, func(t *testing.T, p string) {
			mkfs(t, "ext4", p)
			// Set INCOMPAT_RECOVER, as a crash while mounted leaves it.
			f, err := os.OpenFile(p, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			b := make([]byte, 1)
			if _, err := f.ReadAt(b, 1024+0x60); err != nil {
				t.Fatal(err)
			}
			if _, err := f.WriteAt([]byte{b[0] | 0x4}, 1024+0x60); err != nil {
				t.Fatal(err)
			}
		}, KindExt4, "journal needs recovery"},
		{"xfs", 320 * mib, mkfsFixture("xfs"), KindXFS, "xfs superblock at offset 0"},
		{"btrfs", 128 * mib, mkfsFixture("btrfs"), KindBtrfs, "btrfs superblock at offset 65536"},
		{"MBR signature", 64 * mib, func(t *testing.T, p string) { writeAt(t, p, 510, []byte{0x55, 0xAA}) }, KindPartitioned, "MBR"},
		{"GPT header, 512-byte sectors", 64 * mib, func(t *testing.T, p string) { writeAt(t, p, 512, []byte("EFI PART")) }, KindPartitioned, "GPT header at offset 512"},
		{"GPT header, 4K sectors", 64 * mib, func(t *testing.T, p string) { writeAt(t, p, 4096, []byte("EFI PART")) }, KindPartitioned, "GPT header at offset 4096"},
		{"GPT backup header only", 64 * mib, func(t *testing.T, p string) { writeAt(t, p, 64*mib-512, []byte("EFI PART")) }, KindPartitioned, "GPT header at offset 67108352"},
		{"random data", 8 * mib, randomData, KindUnknown, "non-zero data at offset 0"},
		{"LUKS header", 8 * mib, func(t *testing.T, p string) { writeAt(t, p, 0, []byte("LUKS\xba\xbe")) }, KindUnknown, "LUKS"},
		{"one byte at offset 0", 8 * mib, setByte(0), KindUnknown, "offset 0"},
		{"one byte at the end of the first MiB", 8 * mib, setByte(mib - 1), KindUnknown, "offset 1048575"},
		{"one byte in the last MiB", 8 * mib, setByte(7*mib + 10), KindUnknown, "offset 7340042"},
		{"the very last byte", 8*mib + 7, setByte(8*mib + 6), KindUnknown, "offset 8388614"},
		{"one byte at a 2 MiB sample", 64 * mib, setByte(2*mib + 100), KindUnknown, "offset 2097252"},
		{"ext4 (1K blocks) with both edges wiped", 64 * mib, func(t *testing.T, p string) { mkfs(t, "ext4", p); zeroEdges(t, p) }, KindUnknown, "backup superblock"},
		{"ext4 (4K blocks) with both edges wiped", 160 * mib, func(t *testing.T, p string) {
			if out, err := exec.Command("mkfs.ext4", "-q", "-b", "4096", p).CombinedOutput(); err != nil {
				t.Fatalf("mkfs.ext4: %v: %s", err, out)
			}
			zeroEdges(t, p)
		}, KindUnknown, "backup superblock near offset 134217728"},
		// The second allocation group's superblock, a quarter in.
		{"xfs with both edges wiped", 320 * mib, func(t *testing.T, p string) { mkfs(t, "xfs", p); zeroEdges(t, p) }, KindUnknown, "non-zero data at offset 83886080"},
		{"btrfs with its primary superblock wiped", 128 * mib, func(t *testing.T, p string) {
			if _, err := exec.LookPath("mkfs.btrfs"); err != nil {
				writeAt(t, p, btrfsMirror+64, []byte("_BHRfS_M"))
			} else {
				mkfs(t, "btrfs", p)
			}
			zeroEdges(t, p)
		}, KindUnknown, "btrfs mirror superblock"},
	}
}

// TestProbeImages probes every fixture and, for each one that is not
// blank, checks that Format refuses it and writes nothing (one test, so
// each image is built once).
func TestProbeImages(t *testing.T) {
	for _, fx := range probeFixtures() {
		t.Run(fx.name, func(t *testing.T) {
			path := newImage(t, fx.size)
			fx.build(t, path)
			got, err := Probe(testCtx(t), path)
			if err != nil {
				t.Fatal(err)
			}
			if got.Kind != fx.want || !strings.Contains(got.Detail, fx.wantDetail) {
				t.Errorf("Probe = %+v, want kind %s with detail containing %q", got, fx.want, fx.wantDetail)
			}
			if fx.want != KindBlank {
				checkFormatRefuses(t, path)
			}
		})
	}
}

func TestProbeLoopDevices(t *testing.T) {
	requireLoop(t)
	cases := []struct {
		name  string
		build func(*testing.T, string)
		want  Kind
	}{
		{"blank", func(*testing.T, string) {}, KindBlank},
		{"ext4", mkfsFixture("ext4"), KindExt4},
		{"byte in the last MiB", setByte(63*mib + 5), KindUnknown},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			img := newImage(t, 64*mib)
			tc.build(t, img)
			dev := attachLoop(t, img, true)
			got, err := Probe(testCtx(t), dev.Path)
			if err != nil {
				t.Fatal(err)
			}
			if got.Kind != tc.want {
				t.Errorf("Probe(%s) = %+v, want %s", dev.Path, got, tc.want)
			}
		})
	}
}

// failingDevices are paths whose probe must fail, never say "blank". The
// loop device reads EIO past its shrunken backing file, like a disk whose
// path died after a reconnect.
func failingDevices(t *testing.T) map[string]string {
	dir := t.TempDir()
	short := newImage(t, 512<<10)
	empty := newImage(t, 0)
	devices := map[string]string{
		"short file":       short,
		"empty file":       empty,
		"directory":        dir,
		"missing path":     filepath.Join(dir, "missing"),
		"character device": "/dev/null",
	}
	// Without root the loop case is left out, except in CI, where the
	// attach then fails loudly.
	if loopdev.Available() == nil || testenv.CI() {
		img := newImage(t, 64*mib)
		dev := attachLoop(t, img, false)
		if err := os.Truncate(img, mib); err != nil {
			t.Fatal(err)
		}
		devices["loop device with EIO past the first MiB"] = dev.Path
	}
	return devices
}

func TestProbeFails(t *testing.T) {
	for name, path := range failingDevices(t) {
		t.Run(name, func(t *testing.T) {
			got, err := Probe(testCtx(t), path)
			if err == nil {
				t.Fatalf("Probe(%s) = %+v, nil; want an error", path, got)
			}
			if got.Kind != "" {
				t.Errorf("Probe returned kind %q with its error", got.Kind)
			}
		})
	}
}

// fakeDevice is a device whose reads misbehave at one offset.
type fakeDevice struct {
	size   int64
	failAt int64 // reads covering this offset misbehave
	mode   string
	hang   chan struct{}
}

func (d fakeDevice) ReadAt(p []byte, off int64) (int, error) {
	if off > d.failAt || off+int64(len(p)) <= d.failAt {
		clear(p)
		return len(p), nil
	}
	switch d.mode {
	case "eio":
		return 0, syscall.EIO
	case "short without error":
		return len(p) / 2, nil
	case "short with EOF":
		return len(p) / 2, io.EOF
	case "hang":
		<-d.hang
	}
	return 0, errors.New("unreachable")
}

func TestProbeReadFaults(t *testing.T) {
	hang := make(chan struct{})
	t.Cleanup(func() { close(hang) })
	const size = 256 * mib
	for _, mode := range []string{"eio", "short without error", "short with EOF", "hang"} {
		for _, failAt := range []int64{0, 64*mib + 64, size - 1} {
			dev := fakeDevice{size: size, failAt: failAt, mode: mode, hang: hang}
			open := func(string) (io.ReaderAt, int64, func() error, error) {
				return dev, dev.size, func() error { return nil }, nil
			}
			ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
			got, err := probeWith(ctx, "fake", open)
			cancel()
			if err == nil {
				t.Errorf("%s at %d: Probe = %+v, want an error", mode, failAt, got)
			}
		}
	}
}

func TestProbeOffsetsCoverSuperblocks(t *testing.T) {
	for _, size := range []int64{mib, 2 * mib, 64*mib + 4096, 1 << 30, 1 << 40} {
		regions := probeOffsets(size)
		covered := func(off, n int64) bool {
			for _, r := range regions {
				if regionHolds(r, off, n) {
					return true
				}
			}
			return false
		}
		must := []int64{0, 1024, 64 << 10, size - 512}
		if size >= btrfsMirror+sampleSize+mib {
			must = append(must, btrfsMirror)
		}
		for _, off := range must {
			if !covered(off, 8) {
				t.Errorf("size %d: offset %d is not probed", size, off)
			}
		}
		for _, r := range regions {
			if r.off%alignment != 0 || r.off+r.n > size {
				t.Errorf("size %d: region at %d (+%d) is misaligned or past the end", size, r.off, r.n)
			}
		}
	}
}

// byteDevice is a device of zeros with one non-zero byte at nz.
type byteDevice struct {
	size, nz int64
	reads    *[]int
}

func (d byteDevice) ReadAt(p []byte, off int64) (int, error) {
	*d.reads = append(*d.reads, len(p))
	clear(p)
	if d.nz >= off && d.nz < off+int64(len(p)) {
		p[d.nz-off] = 1
	}
	return len(p), nil
}

// TestProbeChecksEveryByte: reading through one small buffer still checks every byte of
// every region: a single non-zero byte at the first or last byte of each region, or in
// the middle, is reported where it is; no read is larger than a chunk.
func TestProbeChecksEveryByte(t *testing.T) {
	const size = 1<<30 + 512
	for _, reg := range probeOffsets(size) {
		for _, nz := range []int64{reg.off, reg.off + reg.n/2, reg.off + reg.n - 1} {
			var reads []int
			p, err := readRegions(byteDevice{size: size, nz: nz, reads: &reads}, size)
			if err != nil {
				t.Fatal(err)
			}
			got := classify(p)
			if want := fmt.Sprintf("non-zero data at offset %d", nz); got.Kind != KindUnknown || got.Detail != want {
				t.Errorf("one byte at %d: %+v, want unknown with %q", nz, got, want)
			}
			if slices.Max(reads) > chunkSize {
				t.Errorf("a read of %d bytes: want at most %d", slices.Max(reads), chunkSize)
			}
		}
	}
	buf := chunkPool.Get().(*[]byte)
	defer chunkPool.Put(buf)
	if len(*buf) != chunkSize || uintptrOfSlice(*buf)%alignment != 0 {
		t.Fatalf("chunk buffer of %d bytes at %#x: want %d bytes aligned to %d", len(*buf), uintptrOfSlice(*buf), chunkSize, alignment)
	}
}

// TestProbeFilesystemSize: Size is the filesystem's own size from its superblock, not the
// device's, so a volume restored or cloned into a larger disk is seen to need growing.
func TestProbeFilesystemSize(t *testing.T) {
	for _, tc := range []struct {
		name string
		size int64
		mkfs []string
	}{
		{"ext4, 1K blocks", 64 * mib, []string{"mkfs.ext4", "-q", "-b", "1024"}},
		{"ext4, 4K blocks, 64bit", 160 * mib, []string{"mkfs.ext4", "-q", "-b", "4096", "-O", "64bit"}},
		{"ext4, 4K blocks, not 64bit", 160 * mib, []string{"mkfs.ext4", "-q", "-b", "4096", "-O", "^64bit"}},
		{"ext2", 64 * mib, []string{"mkfs.ext2", "-q"}},
		{"xfs", 320 * mib, []string{"mkfs.xfs", "-q"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := newImage(t, tc.size)
			if out, err := exec.Command(tc.mkfs[0], append(tc.mkfs[1:], path)...).CombinedOutput(); err != nil {
				t.Fatalf("%s: %v: %s", tc.mkfs[0], err, out)
			}
			if err := os.Truncate(path, 3*tc.size); err != nil { // the disk grew, the filesystem did not
				t.Fatal(err)
			}
			got, err := Probe(testCtx(t), path)
			if err != nil {
				t.Fatal(err)
			}
			if got.Size != tc.size {
				t.Fatalf("Probe size %d, want the filesystem's %d (the device is %d)", got.Size, tc.size, 3*tc.size)
			}
		})
	}
	if got, err := Probe(testCtx(t), newImage(t, 64*mib)); err != nil || got.Size != 0 {
		t.Fatalf("a blank device: %+v, %v; want size 0", got, err)
	}
}
