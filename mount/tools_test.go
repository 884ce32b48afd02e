package mount

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
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
