package mount

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"srvlab.io/rds-csi/internal/loopdev"
)

// fakeTool installs an executable script named name first on PATH, ahead
// of /usr/bin and /bin (for sleep) but without the sbin directories that
// hold the real tools, so exit codes and hangs can be played back without
// a broken filesystem.
func fakeTool(t *testing.T, name, script string) {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, name), []byte("#!/bin/sh\n"+script+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir+":/usr/bin:/bin")
}

func TestRunTool(t *testing.T) {
	cases := []struct {
		name     string
		tool     string
		script   string // "" = no such tool on PATH
		timeout  time.Duration
		wantCode int
		wantErr  string
	}{
		{"success", "mkfs.ext4", "echo made; exit 0", time.Second, 0, ""},
		{"exit code kept", "e2fsck", "echo 'UNEXPECTED INCONSISTENCY' >&2; exit 4", time.Second, 4, "exited with code 4: UNEXPECTED INCONSISTENCY"},
		{"missing tool names its package", "xfs_repair", "", time.Second, -1, "add the xfsprogs package"},
		{"not one of ours", "rm", "exit 0", time.Second, -1, "not one of the filesystem tools"},
		{"killed at the deadline", "mkfs.xfs", "sleep 30", 200 * time.Millisecond, -1, "did not finish before the deadline"},
		{"killed even with a grandchild holding the pipe", "resize2fs", "sleep 30 & wait", 200 * time.Millisecond, -1, "did not finish before the deadline"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.script == "" {
				t.Setenv("PATH", t.TempDir())
			} else {
				fakeTool(t, tc.tool, tc.script)
			}
			ctx, cancel := context.WithTimeout(context.Background(), tc.timeout)
			defer cancel()
			start := time.Now()
			res, err := runTool(ctx, tc.tool, "/dev/fake")
			if res.exitCode != tc.wantCode {
				t.Errorf("exit code %d, want %d", res.exitCode, tc.wantCode)
			}
			if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Errorf("err = %v, want one containing %q", err, tc.wantErr)
			}
			if elapsed := time.Since(start); elapsed > tc.timeout+toolWaitDelay+2*time.Second {
				t.Errorf("took %v: the deadline did not stop it", elapsed)
			}
		})
	}
}

func TestRepairExitCodes(t *testing.T) {
	image := newImage(t, mib) // a regular file: the mount check passes
	cases := []struct {
		fstype, tool string
		code         string
		wantNil      bool
		wantNeeds    bool
		output       string // extra shell before the exit
	}{
		{"ext4", "e2fsck", "0", true, false, ""},
		{"ext4", "e2fsck", "1", true, false, ""},
		{"ext4", "e2fsck", "2", true, false, ""},
		{"ext4", "e2fsck", "3", true, false, ""},
		{"ext4", "e2fsck", "4", false, true, ""},
		{"ext4", "e2fsck", "12", false, true, ""},
		{"ext4", "e2fsck", "8", false, false, ""},
		{"ext4", "e2fsck", "32", false, false, ""},
		{"xfs", "xfs_repair", "0", true, false, ""},
		{"xfs", "xfs_repair", "2", true, false, ""},
		{"xfs", "xfs_repair", "1", false, true, ""},
		{"xfs", "xfs_repair", "1", true, false, "echo 'ALERT: The filesystem has valuable metadata changes in a log which is being ignored' >&2;"},
		{"xfs", "xfs_repair", "4", false, false, ""},
	}
	for _, tc := range cases {
		t.Run(tc.tool+" exits "+tc.code+" "+tc.output, func(t *testing.T) {
			fakeTool(t, tc.tool, "echo details; "+tc.output+" exit "+tc.code)
			err := Repair(context.Background(), image, tc.fstype)
			if tc.wantNil != (err == nil) || tc.wantNeeds != errors.Is(err, ErrNeedsRepair) {
				t.Fatalf("Repair = %v; want nil %v, ErrNeedsRepair %v", err, tc.wantNil, tc.wantNeeds)
			}
			if tc.wantNeeds && !strings.Contains(err.Error(), "by hand") {
				t.Errorf("%v does not say what to do", err)
			}
		})
	}
}

// forbidTools fails the test if any tool runs.
func forbidTools(t *testing.T) func(context.Context, string, ...string) (toolResult, error) {
	return func(_ context.Context, name string, args ...string) (toolResult, error) {
		t.Errorf("%s %v ran; nothing may be executed for a device that is not provably blank", name, args)
		return toolResult{exitCode: -1}, errors.New("forbidden")
	}
}

// fingerprint is what any write to an image file would change: its
// modification time and its first MiB.
func fingerprint(t *testing.T, path string) string {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	head := make([]byte, mib)
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	n, _ := f.ReadAt(head, 0)
	return fmt.Sprintf("%d %d %x", st.Size(), st.ModTime().UnixNano(), sha256.Sum256(head[:n]))
}

// checkFormatRefuses runs Format, for real and with a runner that forbids
// mkfs, on an image the probe does not call blank.
func checkFormatRefuses(t *testing.T, path string) {
	t.Helper()
	before := fingerprint(t, path)
	for _, fstype := range []string{"ext4", "xfs"} {
		guarded := fsTools{open: openDevice, run: forbidTools(t)}
		if err := guarded.format(testCtx(t), path, fstype); !errors.Is(err, ErrNotBlank) {
			t.Errorf("format as %s = %v, want ErrNotBlank", fstype, err)
		}
		if err := Format(testCtx(t), path, fstype); !errors.Is(err, ErrNotBlank) {
			t.Errorf("Format as %s = %v, want ErrNotBlank", fstype, err)
		}
	}
	if fingerprint(t, path) != before {
		t.Fatal("a refused Format changed the device")
	}
}

func TestFormatRefusesUnreadable(t *testing.T) {
	for name, path := range failingDevices(t) {
		t.Run(name, func(t *testing.T) {
			guarded := fsTools{open: openDevice, run: forbidTools(t)}
			if err := guarded.format(testCtx(t), path, "ext4"); err == nil {
				t.Fatal("format succeeded, want an error")
			}
			if err := Format(testCtx(t), path, "xfs"); err == nil {
				t.Fatal("Format succeeded, want an error")
			}
		})
	}
	// Faults no real file can produce on demand: EIO, short reads and a
	// read that hangs, at the head, the btrfs mirror and the last byte.
	hang := make(chan struct{})
	t.Cleanup(func() { close(hang) })
	image := newImage(t, mib) // real path for the mount check; reads go to the fake
	for _, mode := range []string{"eio", "short without error", "short with EOF", "hang"} {
		for _, failAt := range []int64{0, btrfsMirror + 64, 256*mib - 1} {
			dev := fakeDevice{size: 256 * mib, failAt: failAt, mode: mode, hang: hang}
			tools := fsTools{
				open: func(string) (io.ReaderAt, int64, func() error, error) {
					return dev, dev.size, func() error { return nil }, nil
				},
				run: forbidTools(t),
			}
			ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
			if err := tools.format(ctx, image, "ext4"); err == nil {
				t.Errorf("%s at %d: format succeeded, want an error", mode, failAt)
			}
			cancel()
		}
	}
}

func TestFormatBlank(t *testing.T) {
	requireLoop(t)
	for _, fstype := range []string{"ext4", "xfs"} {
		t.Run(fstype, func(t *testing.T) {
			ctx := testCtx(t)
			dev, _ := blankFormatted(t, fstype)
			got, err := Probe(ctx, dev.Path)
			if err != nil || got.Kind != Kind(fstype) {
				t.Fatalf("Probe after Format = %+v, %v; want %s", got, err, fstype)
			}
			if err := Format(ctx, dev.Path, fstype); !errors.Is(err, ErrNotBlank) {
				t.Fatalf("second Format = %v, want ErrNotBlank", err)
			}
			target := mountPoint(t)
			if err := Mount(ctx, dev.Path, target, fstype, Options{}); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(target, "f"), []byte("data"), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := Format(ctx, dev.Path, fstype); !errors.Is(err, ErrInUse) {
				t.Fatalf("Format of a mounted device = %v, want ErrInUse", err)
			}
			if st, err := StatContext(ctx, target); err != nil || st.TotalBytes < minSize[fstype]/2 {
				t.Fatalf("Stat = %+v, %v; want at least half of %d bytes (no 5%% reserve)", st, err, minSize[fstype])
			}
		})
	}
}

func TestFormatUnsupportedType(t *testing.T) {
	path := newImage(t, 4*mib)
	for _, fstype := range []string{"btrfs", "ext3", "", "vfat"} {
		guarded := fsTools{open: openDevice, run: forbidTools(t)}
		if err := guarded.format(testCtx(t), path, fstype); err == nil {
			t.Errorf("format as %q succeeded", fstype)
		}
	}
}

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
