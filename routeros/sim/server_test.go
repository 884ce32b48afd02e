package sim

import (
	"bytes"
	"errors"
	"testing"

	"golang.org/x/crypto/ssh"
)

// sshRun runs one command on its own exec channel and returns stdout, stderr and the exit status.
func sshRun(t testing.TB, client *ssh.Client, cmd string) (string, string, int) {
	t.Helper()
	sess, err := client.NewSession()
	if err != nil {
		t.Fatalf("new session: %v", err)
	}
	defer sess.Close()
	var out, errb bytes.Buffer
	sess.Stdout, sess.Stderr = &out, &errb
	err = sess.Run(cmd)
	code := 0
	var exit *ssh.ExitError
	if errors.As(err, &exit) {
		code = exit.ExitStatus()
	} else if err != nil {
		t.Fatalf("run %q: %v", cmd, err)
	}
	return out.String(), errb.String(), code
}

func dial(t testing.TB, ts *TestServer) *ssh.Client {
	t.Helper()
	c, err := ssh.Dial("tcp", ts.Addr, ts.ClientConfig())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestServerRunsOneCommandPerExec(t *testing.T) {
	ts := StartTest(t, Options{})
	c := dial(t, ts)
	tests := []struct {
		cmd, stdout string
	}{
		{`:put [/system resource get version]`, "7.24.4 (stable)\n"},
		{`/disk add type=file file-path="/storage-pool/metal-csi/pvc-a.img" file-size=1536M slot="pvc-a" nvme-tcp-export=yes`, ""},
		{`/disk print detail where slot="pvc-a"`, "Flags: B - BLOCK-DEVICE; t - NVME-TCP-EXPORT\n" +
			" 1 Bt type=file slot=\"pvc-a\" slot-default=\"\" parent=\"\" fs=-\n" +
			"      model=\"/storage-pool/metal-csi/pvc-a.img\" size=1 610 612 736\n" +
			"      mount-filesystem=no mount-read-only=no compress=no sector-size=512\n" +
			"      raid-master=none nvme-tcp-export=yes nvme-tcp-server-port=4420\n" +
			"      nvme-tcp-server-nqn=\"\" nvme-tcp-server-allow-host-name=\"\" iscsi-export=no\n" +
			"      nfs-sharing=no smb-sharing=no media-sharing=no media-interface=none\n" +
			"      swap=no file-path=/storage-pool/metal-csi/pvc-a.img file-size=1536.0MiB\n" +
			"      file-offset=0\n"},
		{`/disk foo`, "bad command name foo (line 1 column 7)\n"},
		{`/disk add slot=x bogus=1`, "expected end of command (line 1 column 18)\n"},
	}
	for _, tt := range tests {
		out, errOut, code := sshRun(t, c, tt.cmd)
		if out != tt.stdout || errOut != "" || code != 0 {
			t.Errorf("%s:\n got stdout %q stderr %q exit %d\nwant stdout %q", tt.cmd, out, errOut, code, tt.stdout)
		}
	}
	if got := len(ts.Commands()); got != len(tests) {
		t.Errorf("command log has %d entries, want %d", got, len(tests))
	}
}
