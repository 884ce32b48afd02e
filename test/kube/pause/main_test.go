package main

import (
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

// The test binary runs main itself when asked, as the sandbox would run the command.
func init() {
	if os.Getenv("PAUSE_TEST_RUN_MAIN") == "1" {
		main()
	}
}

func TestPauseSleepsUntilTerminated(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), "PAUSE_TEST_RUN_MAIN=1")
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			time.Sleep(200 * time.Millisecond) // its signal handlers are set up
			// a SIGCHLD means children to reap, not an exit
			if err := cmd.Process.Signal(syscall.SIGCHLD); err != nil {
				t.Fatal(err)
			}
			select {
			case err := <-done:
				t.Fatalf("pause exited before it was told to: %v", err)
			case <-time.After(300 * time.Millisecond):
			}
			if err := cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("pause exited with %v on %v, want 0", err, sig)
				}
			case <-time.After(10 * time.Second):
				_ = cmd.Process.Kill()
				t.Fatalf("pause ignored %v", sig)
			}
		})
	}
}
