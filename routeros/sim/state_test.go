package sim

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// A simulator started again on the same directory has the same disks and exports, like an
// RDS after a power cycle; while it is off nothing is exported.
func TestDisksSurviveRestart(t *testing.T) {
	dir := t.TempDir()
	s, err := New(Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	mustExec(t, s, `/disk add type=file file-path=/storage-pool/metal-csi/pvc-a.img file-size=1G slot=pvc-a nvme-tcp-export=yes nvme-tcp-server-nqn="nqn.2000-02.com.mikrotik:pvc-a" nvme-tcp-server-allow-host-name="nqn.h" comment="kept"`)
	mustExec(t, s, `/disk add type=file file-path=/storage-pool/metal-csi/pvc-b.img file-size=2G slot=pvc-b`)
	mustExec(t, s, `/disk add type=file file-path=/storage-pool/metal-csi/pvc-c.img file-size=1G slot=pvc-c`)
	mustExec(t, s, `/disk remove pvc-c`)
	before := mustExec(t, s, `/disk print detail`)
	link := filepath.Join(dir, ExportsDirName, "nqn.2000-02.com.mikrotik:pvc-a")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(link); !os.IsNotExist(err) {
		t.Errorf("export survived Close: %v", err)
	}
	s2 := newSim(t, Options{Dir: dir})
	if after := mustExec(t, s2, `/disk print detail`); after != before {
		t.Errorf("after restart:\n%s\nbefore:\n%s", after, before)
	}
	if _, err := os.Readlink(link); err != nil {
		t.Errorf("export not restored: %v", err)
	}
	r, err := s2.Exec(context.Background(), `:put [/disk add type=file file-path=/storage-pool/metal-csi/pvc-d.img file-size=1G slot=pvc-d]`)
	if err != nil || r != "*5\n" { // the pool is *1, disks were *2..*4 (*4 removed): ids are never reused
		t.Errorf("new disk id %q, %v", r, err)
	}
}

func TestDamagedStateFileIsReported(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, StateFileName), []byte("{"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := New(Options{Dir: dir}); err == nil || !strings.Contains(err.Error(), "remove it to start with no disks") {
		t.Errorf("damaged state: %v", err)
	}
}

func TestReboot(t *testing.T) {
	ts := StartTest(t, Options{})
	c := dial(t, ts)
	sshRun(t, c, `/disk add type=file file-path=/storage-pool/a.img file-size=1M slot=a nvme-tcp-export=yes`)
	link := filepath.Join(ts.Dir(), ExportsDirName, "a")
	done := make(chan error, 1)
	go func() { done <- ts.Reboot(context.Background(), 300*time.Millisecond) }()
	if err := c.Wait(); err == nil {
		t.Error("connection survived the reboot")
	}
	waitFor(t, "the export to go down", func() bool { _, err := os.Lstat(link); return os.IsNotExist(err) })
	if c2, err := ssh.Dial("tcp", ts.Addr, ts.ClientConfig()); err == nil {
		c2.Close()
		t.Error("connected while rebooting")
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, err := os.Readlink(link); err != nil {
		t.Errorf("export not back after reboot: %v", err)
	}
	c3 := dial(t, ts)
	if out, _, _ := sshRun(t, c3, `/disk print detail where slot=a`); !strings.Contains(out, `slot="a"`) {
		t.Errorf("disk gone after reboot:\n%s", out)
	}
}
