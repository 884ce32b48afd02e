package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"srvlab.io/rds-csi/routeros/sim"
)

// lineWriter hands the first line written to it to a channel.
type lineWriter struct {
	buf  bytes.Buffer
	line chan string
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.buf.Write(p)
	if i := bytes.IndexByte(w.buf.Bytes(), '\n'); i >= 0 && w.line != nil {
		w.line <- w.buf.String()[:i]
		w.line = nil
	}
	return len(p), nil
}

func TestRunServesUntilCancelled(t *testing.T) {
	dir := t.TempDir()
	client, _, err := sim.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	authorized := filepath.Join(dir, "authorized_keys")
	if err := os.WriteFile(authorized, ssh.MarshalAuthorizedKey(client.PublicKey()), 0o644); err != nil {
		t.Fatal(err)
	}
	hostKey := filepath.Join(dir, "keys", "host_ed25519")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	lines := make(chan string, 1)
	out := &lineWriter{line: lines}
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"--listen", "127.0.0.1:0", "--dir", filepath.Join(dir, "rds"), "--host-key", hostKey,
			"--authorized-keys", authorized, "--version", "7.20", "--pool", "storage-pool=2G"}, out, io.Discard)
	}()
	var line string
	select {
	case line = <-lines:
	case err := <-done:
		t.Fatalf("run returned early: %v", err)
	case <-time.After(5 * time.Second):
		t.Fatal("no listening line")
	}
	prefix, rest, ok := strings.Cut(line, "rds-sim: listening on ")
	addr, _, _ := strings.Cut(rest, " ")
	if !ok || prefix != "" || !strings.HasSuffix(line, "(version 7.20, dir "+filepath.Join(dir, "rds")+")") {
		t.Fatalf("listening line %q", line)
	}
	if _, err := os.Stat(hostKey); err != nil {
		t.Fatalf("host key not generated: %v", err)
	}
	c, err := ssh.Dial("tcp", addr, &ssh.ClientConfig{User: "admin", Auth: []ssh.AuthMethod{ssh.PublicKeys(client)},
		HostKeyCallback: ssh.InsecureIgnoreHostKey(), Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sess, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	got, err := sess.Output(`/disk print detail where mount-point="storage-pool"`)
	if err != nil || !strings.Contains(string(got), "size=2 147 483 648") {
		t.Errorf("pool: %q, %v", got, err)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("run: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("run did not stop when cancelled")
	}
}

func TestRunDefaultPoolHasTheDriversVolumePath(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // start, then stop at once
	client, _, _ := sim.NewKey()
	authorized := filepath.Join(dir, "authorized_keys")
	if err := os.WriteFile(authorized, ssh.MarshalAuthorizedKey(client.PublicKey()), 0o644); err != nil {
		t.Fatal(err)
	}
	err := run(ctx, []string{"--listen", "127.0.0.1:0", "--dir", dir, "--host-key", filepath.Join(dir, "hk"), "--authorized-keys", authorized}, io.Discard, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(filepath.Join(dir, "storage-pool", "metal-csi")); err != nil || !st.IsDir() {
		t.Errorf("default volume path: %v", err)
	}
}

func TestRunRejectsBadFlags(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"--host-key", "k", "--authorized-keys", "a"}, "--dir is required"},
		{[]string{"--dir", dir, "--authorized-keys", "a"}, "--host-key is required"},
		{[]string{"--dir", dir, "--host-key", filepath.Join(dir, "k")}, "--authorized-keys is required"},
		{[]string{"--dir", dir, "--host-key", filepath.Join(dir, "k"), "--authorized-keys", filepath.Join(dir, "none")}, "read authorized keys"},
		{[]string{"--pool", "big"}, "want NAME=SIZE"},
		{[]string{"--pool", "p=lots"}, `size "lots"`},
		{[]string{"--dir", dir, "stray"}, `unexpected argument "stray"`},
	}
	for _, tt := range tests {
		err := run(context.Background(), tt.args, io.Discard, io.Discard)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%v: %v, want an error containing %q", tt.args, err, tt.want)
		}
	}
}
