package mount

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// shutdownWithLogFlush is XFS_IOC_GOINGDOWN / EXT4_IOC_SHUTDOWN (the same
// number) with the LOGFLUSH flag: the filesystem stops as if the node lost
// power right after committing its journal, leaving a log to replay.
const (
	iocShutdown       = 0x8004587d
	shutdownLogFlush  = 1
	dirtyJournalFile  = "committed"
	dirtyJournalBytes = "survives the crash"
)

func crashFilesystem(t *testing.T, target string) {
	t.Helper()
	path := filepath.Join(target, dirtyJournalFile)
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(dirtyJournalBytes); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	dir, err := os.Open(target)
	if err != nil {
		t.Fatal(err)
	}
	defer dir.Close()
	if err := unix.IoctlSetPointerInt(int(dir.Fd()), iocShutdown, shutdownLogFlush); err != nil {
		t.Fatalf("shutdown ioctl: %v", err)
	}
}

// TestRepairDirtyJournal: a journal left by a crash must not block
// staging. Repair accepts it (e2fsck replays it; xfs leaves it to the
// mount) and the next mount shows the committed data.
func TestRepairDirtyJournal(t *testing.T) {
	requireLoop(t)
	for _, fstype := range []string{"ext4", "xfs"} {
		t.Run(fstype, func(t *testing.T) {
			ctx := testCtx(t)
			dev, _ := blankFormatted(t, fstype)
			target := mountPoint(t)
			if err := Mount(ctx, dev.Path, target, fstype, Options{}); err != nil {
				t.Fatal(err)
			}
			crashFilesystem(t, target)
			if err := UnmountAll(ctx, target); err != nil {
				t.Fatal(err)
			}
			if got, err := Probe(ctx, dev.Path); err != nil || got.Kind != Kind(fstype) {
				t.Fatalf("Probe of the crashed filesystem = %+v, %v", got, err)
			}
			if err := Repair(ctx, dev.Path, fstype); err != nil {
				t.Fatalf("Repair of a dirty journal = %v, want nil", err)
			}
			if err := Mount(ctx, dev.Path, target, fstype, Options{}); err != nil {
				t.Fatal(err)
			}
			if got, err := os.ReadFile(filepath.Join(target, dirtyJournalFile)); err != nil || string(got) != dirtyJournalBytes {
				t.Fatalf("after replay read %q, %v; want %q", got, err, dirtyJournalBytes)
			}
		})
	}
}

func TestRepairRefusesMounted(t *testing.T) {
	requireLoop(t)
	ctx := testCtx(t)
	dev, target := mountedLoop(t, "ext4")
	guarded := fsTools{open: openDevice, run: forbidTools(t)}
	if err := guarded.repair(ctx, dev.Path, "ext4"); !errors.Is(err, ErrInUse) || !strings.Contains(err.Error(), target) {
		t.Fatalf("repair of a mounted device = %v, want ErrInUse naming %s", err, target)
	}
}

func TestRepairReal(t *testing.T) {
	corrupt := func(tool string, args ...string) func(*testing.T, string) {
		return func(t *testing.T, path string) {
			for _, a := range args {
				if out, err := exec.Command(tool, "-w", "-R", a, path).CombinedOutput(); tool == "debugfs" && err != nil {
					t.Fatalf("%s %s: %v: %s", tool, a, err, out)
				}
			}
		}
	}
	cases := []struct {
		name      string
		fstype    string
		damage    func(*testing.T, string)
		wantNeeds bool
	}{
		{"clean ext4", "ext4", func(*testing.T, string) {}, false},
		{"clean xfs", "xfs", func(*testing.T, string) {}, false},
		// Root inode cleared and the error flag set, as the kernel does
		// when it meets corruption: e2fsck -p must not guess.
		{"ext4 without a root directory", "ext4", corrupt("debugfs", "clri <2>", "ssv state 2"), true},
		{"xfs with a broken root inode", "xfs", func(t *testing.T, path string) {
			cmd := exec.Command("xfs_db", "-x", "-c", "inode 128", "-c", "write -d core.mode 0", path)
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("xfs_db: %v: %s", err, out)
			}
		}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			img := newImage(t, minSize[tc.fstype])
			mkfs(t, tc.fstype, img)
			tc.damage(t, img)
			err := Repair(testCtx(t), img, tc.fstype)
			if tc.wantNeeds != errors.Is(err, ErrNeedsRepair) || !tc.wantNeeds && err != nil {
				t.Fatalf("Repair = %v, want ErrNeedsRepair: %v", err, tc.wantNeeds)
			}
		})
	}
}
