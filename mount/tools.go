package mount

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

const (
	// defaultToolTimeout bounds a tool run whose context has no deadline.
	defaultToolTimeout = 10 * time.Minute
	// toolWaitDelay is how long a killed tool's output pipes may stay open
	// (a grandchild holding them) before Wait gives up on them.
	toolWaitDelay = 5 * time.Second
	// maxToolOutput keeps error messages readable.
	maxToolOutput = 2000
)

// toolPackages names the package that ships each tool, for the message
// when one is missing.
var toolPackages = map[string]string{
	"mkfs.ext4":  "e2fsprogs",
	"e2fsck":     "e2fsprogs",
	"resize2fs":  "e2fsprogs",
	"mkfs.xfs":   "xfsprogs",
	"xfs_repair": "xfsprogs",
	"xfs_growfs": "xfsprogs",
}

// toolResult is what a finished tool run left behind.
type toolResult struct {
	exitCode int // -1 when it did not exit normally (killed, not started)
	output   string
}

// toolRunner runs one of the filesystem tools: a seam so tests can prove a
// refused Format never reaches mkfs.
type toolRunner func(ctx context.Context, name string, args ...string) (toolResult, error)

// fsTools bundles the seams the filesystem operations go through.
type fsTools struct {
	open opener
	run  toolRunner
}

var systemTools = fsTools{open: openDevice, run: runTool}

// runTool runs name with args under ctx's deadline (or a default bound),
// kills it when the deadline passes, and returns its exit code and
// combined output. A non-zero exit is an error; callers that give exit
// codes a meaning look at the result too.
func runTool(ctx context.Context, name string, args ...string) (toolResult, error) {
	if _, ok := toolPackages[name]; !ok {
		return toolResult{exitCode: -1}, fmt.Errorf("%s is not one of the filesystem tools this package runs", name)
	}
	ctx, cancel := withDefaultDeadline(ctx, defaultToolTimeout)
	defer cancel()
	path, err := exec.LookPath(name)
	if err != nil {
		return toolResult{exitCode: -1}, fmt.Errorf("%s is not installed: add the %s package to the node image: %w", name, toolPackages[name], err)
	}
	cmd := exec.CommandContext(ctx, path, args...)
	// Kill the whole process group at the deadline: a child the tool
	// forked must not go on writing to the device after we returned.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = toolWaitDelay
	// A fixed locale keeps the output we quote in errors predictable.
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	out, err := cmd.CombinedOutput()
	res := toolResult{exitCode: cmd.ProcessState.ExitCode(), output: trimOutput(out)}
	if err == nil {
		return res, nil
	}
	command := strings.Join(append([]string{name}, args...), " ")
	if ctxErr := ctx.Err(); ctxErr != nil {
		return res, fmt.Errorf("%s did not finish before the deadline and was killed: %w (output: %s)", command, ctxErr, res.output)
	}
	var exitErr *exec.ExitError
	if errors.As(err, &exitErr) {
		return res, fmt.Errorf("%s exited with code %d: %s", command, res.exitCode, res.output)
	}
	return res, fmt.Errorf("%s: %w (output: %s)", command, err, res.output)
}

func trimOutput(out []byte) string {
	s := strings.TrimSpace(string(out))
	if len(s) > maxToolOutput {
		s = "..." + s[len(s)-maxToolOutput:]
	}
	if s == "" {
		return "(no output)"
	}
	return s
}
