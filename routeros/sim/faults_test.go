package sim

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

func TestFaultErrorStreamAndExitCode(t *testing.T) {
	ts := StartTest(t, Options{})
	c := dial(t, ts)
	for _, tt := range []struct {
		stream Stream
		code   int
	}{{Stdout, 0}, {Stdout, 1}, {Stderr, 0}, {Stderr, 1}} {
		ts.SetErrorOutput(tt.stream, tt.code)
		out, errOut, code := sshRun(t, c, `/disk foo`)
		msg := "bad command name foo (line 1 column 7)\n"
		wantOut, wantErr := msg, ""
		if tt.stream == Stderr {
			wantOut, wantErr = "", msg
		}
		if out != wantOut || errOut != wantErr || code != tt.code {
			t.Errorf("stream %v exit %d: got stdout %q stderr %q exit %d", tt.stream, tt.code, out, errOut, code)
		}
		if out, errOut, code := sshRun(t, c, `:put ok`); out != "ok\n" || errOut != "" || code != 0 {
			t.Errorf("success with errors set to stream %v exit %d: %q %q %d", tt.stream, tt.code, out, errOut, code)
		}
	}
}

func TestFaultLatency(t *testing.T) {
	ts := StartTest(t, Options{Latency: 40 * time.Millisecond})
	c := dial(t, ts)
	ts.SetLatencyFor("print", 60*time.Millisecond)
	for _, tt := range []struct {
		cmd string
		min time.Duration
	}{{`:put x`, 40 * time.Millisecond}, {`/disk print detail`, 100 * time.Millisecond}} {
		start := time.Now()
		sshRun(t, c, tt.cmd)
		if d := time.Since(start); d < tt.min {
			t.Errorf("%s took %v, want at least %v", tt.cmd, d, tt.min)
		}
	}
	ts.SetLatency(0)
}

// A hung command blocks only itself; it ends when the client closes its channel (freeing
// the session slot) or when the hold is released.
func TestFaultHang(t *testing.T) {
	ts := StartTest(t, Options{})
	c := dial(t, ts)
	hold := ts.Hang("/disk print")
	sess, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	if err := sess.Start(`/disk print detail`); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := hold.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	if out, _, _ := sshRun(t, c, `:put other`); out != "other\n" {
		t.Errorf("a hang blocked an unrelated command: %q", out)
	}
	sess.Close()
	waitFor(t, "the hung session to end after the client closed it", func() bool { return ts.Stats().Active == 0 })

	var out bytes.Buffer
	sess2, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	sess2.Stdout = &out
	done := make(chan error, 1)
	go func() { done <- sess2.Run(`/disk print detail where slot=x`) }()
	waitFor(t, "the second command to be held", func() bool { return hold.Held() == 2 })
	select {
	case err := <-done:
		t.Fatalf("held command returned before release: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	hold.Release()
	if err := <-done; err != nil || !strings.HasPrefix(out.String(), "Flags:") {
		t.Errorf("released command: %q, %v", out.String(), err)
	}
	if out, _, _ := sshRun(t, c, `/disk print detail where slot=x`); !strings.HasPrefix(out, "Flags:") {
		t.Errorf("command after release: %q", out)
	}
}

func TestFaultDropConnection(t *testing.T) {
	for _, tt := range []struct {
		at      DropPoint
		created bool
	}{{DropBeforeRun, false}, {DropAfterRun, true}} {
		ts := StartTest(t, Options{})
		c := dial(t, ts)
		ts.DropConnection("/disk add", tt.at)
		sess, err := c.NewSession()
		if err != nil {
			t.Fatal(err)
		}
		err = sess.Run(`/disk add type=file file-path=/storage-pool/a.img file-size=1M slot=a`)
		var exit *ssh.ExitError
		if err == nil || errors.As(err, &exit) {
			t.Errorf("%v: command over a dropped connection returned %v, want a transport error", tt.at, err)
		}
		if err := c.Wait(); err == nil {
			t.Errorf("%v: connection still up", tt.at)
		}
		c2 := dial(t, ts)
		out, _, _ := sshRun(t, c2, `/disk print detail where slot=a`)
		if created := strings.Contains(out, `slot="a"`); created != tt.created {
			t.Errorf("%v: disk created %v, want %v", tt.at, created, tt.created)
		}
		// The drop fired once: the same command now works.
		if _, _, code := sshRun(t, c2, `/disk add type=file file-path=/storage-pool/b.img file-size=1M slot=b`); code != 0 {
			t.Errorf("%v: drop fired twice", tt.at)
		}
	}
}

func TestFaultSessionLimit(t *testing.T) {
	ts := StartTest(t, Options{MaxSessions: 2})
	c := dial(t, ts)
	hold := ts.Hang("print")
	var sessions []*ssh.Session
	for range 2 {
		sess, err := c.NewSession()
		if err != nil {
			t.Fatal(err)
		}
		if err := sess.Start(`/disk print detail`); err != nil {
			t.Fatal(err)
		}
		sessions = append(sessions, sess)
	}
	if _, err := c.NewSession(); err == nil || !strings.Contains(err.Error(), "too many sessions") {
		t.Errorf("third session: %v, want rejected", err)
	}
	if st := ts.Stats(); st.Rejected != 1 || st.PeakConcurrency != 2 {
		t.Errorf("stats %+v", st)
	}
	hold.Release()
	for _, s := range sessions {
		if err := s.Wait(); err != nil {
			t.Error(err)
		}
	}
	// A client that opens its next session right after the previous one closed is served.
	for i := range 20 {
		if out, _, _ := sshRun(t, c, fmt.Sprintf(":put %d", i)); out != fmt.Sprintf("%d\n", i) {
			t.Fatalf("session %d after the limit: %q", i, out)
		}
	}
	ts.SetMaxSessions(0)
}

// RouterOS never answers keepalive@openssh.com: a client waiting for the reply hangs.
func TestKeepaliveIsNotAnswered(t *testing.T) {
	ts := StartTest(t, Options{})
	c := dial(t, ts)
	replied := make(chan error, 1)
	go func() {
		_, _, err := c.SendRequest("keepalive@openssh.com", true, nil)
		replied <- err
	}()
	select {
	case err := <-replied:
		t.Fatalf("keepalive answered (%v)", err)
	case <-time.After(200 * time.Millisecond):
	}
	if out, _, _ := sshRun(t, c, `:put alive`); out != "alive\n" {
		t.Errorf("session after an unanswered keepalive: %q", out)
	}
	c.Close()
	<-replied
}

func TestNoPTYNoShell(t *testing.T) {
	ts := StartTest(t, Options{})
	c := dial(t, ts)
	sess, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	if err := sess.RequestPty("xterm", 24, 80, ssh.TerminalModes{}); err == nil {
		t.Error("PTY granted")
	}
	if err := sess.Shell(); err == nil {
		t.Error("shell granted")
	}
}

func TestAuthRequiresAuthorizedKey(t *testing.T) {
	ts := StartTest(t, Options{})
	other, _, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	conf := ts.ClientConfig()
	conf.Auth = []ssh.AuthMethod{ssh.PublicKeys(other)}
	if c, err := ssh.Dial("tcp", ts.Addr, conf); err == nil {
		c.Close()
		t.Fatal("unauthorized key accepted")
	}
	// The files StartTest wrote are what a client configured from disk uses.
	pem, err := os.ReadFile(ts.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.ParsePrivateKey(pem)
	if err != nil {
		t.Fatal(err)
	}
	conf.Auth = []ssh.AuthMethod{ssh.PublicKeys(signer)}
	c, err := ssh.Dial("tcp", ts.Addr, conf)
	if err != nil {
		t.Fatalf("key file rejected: %v", err)
	}
	c.Close()
}

// Every command sent is logged once, in arrival order, however many run at once.
func TestCommandLogUnderConcurrency(t *testing.T) {
	ts := StartTest(t, Options{Latency: 5 * time.Millisecond})
	c := dial(t, ts)
	const n = 40
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if out, _, _ := sshRun(t, c, fmt.Sprintf(":put %d", i)); out != fmt.Sprintf("%d\n", i) {
				t.Errorf("command %d: %q", i, out)
			}
		}()
	}
	wg.Wait()
	log := ts.Commands()
	sort.Strings(log)
	var want []string
	for i := range n {
		want = append(want, fmt.Sprintf(":put %d", i))
	}
	sort.Strings(want)
	if strings.Join(log, "|") != strings.Join(want, "|") {
		t.Errorf("log:\n%v\nwant:\n%v", log, want)
	}
	if st := ts.Stats(); st.Connections != 1 || st.Sessions != n || st.PeakConcurrency < 2 {
		t.Errorf("stats %+v", st)
	}
	ts.ResetCommands()
	if len(ts.Commands()) != 0 {
		t.Error("ResetCommands kept entries")
	}
}

func TestConsoleWidthFromUserSuffix(t *testing.T) {
	tests := []struct {
		user string
		want int
	}{{"admin", 80}, {"admin+ct", 80}, {"admin+c512w", 512}, {"admin+ct200w", 200}, {"admin+w", 80}, {"admin+0w", 80}}
	for _, tt := range tests {
		if got := consoleWidth(tt.user, 80); got != tt.want {
			t.Errorf("consoleWidth(%q) = %d, want %d", tt.user, got, tt.want)
		}
	}
	ts := StartTest(t, Options{CRLF: true})
	conf := ts.ClientConfig()
	conf.User = "admin+c1000w"
	c, err := ssh.Dial("tcp", ts.Addr, conf)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	out, _, _ := sshRun(t, c, `/disk print detail`)
	lines := strings.Split(strings.TrimSuffix(out, "\r\n"), "\r\n")
	if len(lines) != 2 || strings.Count(out, "\n") != strings.Count(out, "\r\n") {
		t.Errorf("at width 1000 the pool should print on one CRLF line:\n%q", out)
	}
}
