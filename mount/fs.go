package mount

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"time"
)

const (
	defaultToolTimeout = 10 * time.Minute // for a context without deadline
	toolWaitDelay      = 5 * time.Second  // how long a killed tool's pipes may stay open (a grandchild)
	maxToolOutput      = 2000             // keeps error messages readable
)

// toolPackages names the package that ships each tool, for the message when one is missing.
var toolPackages = map[string]string{
	"mkfs.ext4":  "e2fsprogs",
	"e2fsck":     "e2fsprogs",
	"resize2fs":  "e2fsprogs",
	"mkfs.xfs":   "xfsprogs",
	"xfs_repair": "xfsprogs",
	"xfs_growfs": "xfsprogs",
}

type toolResult struct {
	exitCode int // -1 when it did not exit normally (killed, not started)
	output   string
}

// fsTools are the seams of the filesystem operations: tests prove that a refused Format
// never reaches mkfs.
type fsTools struct {
	open opener
	run  func(ctx context.Context, name string, args ...string) (toolResult, error)
}

var systemTools = fsTools{open: openDevice, run: runTool}

// runTool runs name under ctx's deadline (or a default), kills it at the deadline, and
// returns its exit code and combined output; a non-zero exit is an error too.
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
	// Kill the whole group: a child the tool forked must not write to the device after we return.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = toolWaitDelay
	cmd.Env = append(os.Environ(), "LC_ALL=C") // the output quoted in errors stays predictable
	out, err := cmd.CombinedOutput()
	res := toolResult{exitCode: cmd.ProcessState.ExitCode(), output: strings.TrimSpace(string(out))}
	if len(res.output) > maxToolOutput {
		res.output = "..." + res.output[len(res.output)-maxToolOutput:]
	}
	if res.output == "" {
		res.output = "(no output)"
	}
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

// mkfsArgs: no -F/-f, so mkfs keeps its own refusal of a mounted or signed device as a
// second safety net (it does not prompt without a terminal); -m0: a volume is no root
// filesystem, users expect all they asked for; no discard: the device is a fresh sparse
// file on the appliance, discarding only costs time over the network.
var mkfsArgs = map[string][]string{"ext4": {"-q", "-m0", "-E", "nodiscard"}, "xfs": {"-q", "-K"}}

// Format makes an ext4 or xfs filesystem on device, only when its own probe (which the
// caller cannot skip) sees a blank device and nothing of it is mounted. Any doubt (a read
// error, a short device, a signature or non-zero byte) refuses, wrapping ErrNotBlank or the
// probe's error. After mkfs it probes again to confirm the filesystem.
func Format(ctx context.Context, device, fstype string) error {
	return systemTools.format(ctx, device, fstype)
}

func (t fsTools) format(ctx context.Context, device, fstype string) error {
	args, ok := mkfsArgs[fstype]
	if !ok {
		return fmt.Errorf("format %s: unsupported filesystem type %q; supported: ext4, xfs", device, fstype)
	}
	if err := refuseIfMounted(ctx, device); err != nil {
		return fmt.Errorf("refusing to format %s: %w", device, err)
	}
	before, err := probeWith(ctx, device, t.open)
	if err != nil {
		return fmt.Errorf("refusing to format %s: %w; nothing was written", device, err)
	}
	if before.Kind != KindBlank {
		return fmt.Errorf("refusing to format %s: %w: found %s (%s); nothing was written. "+
			"If the volume should keep this data, use it with the filesystem it has; "+
			"if it really is disposable, wipe it yourself and retry",
			device, ErrNotBlank, before.Kind, before.Detail)
	}
	name := "mkfs." + fstype
	if _, err := t.run(ctx, name, append(slices.Clone(args), device)...); err != nil {
		return fmt.Errorf("format %s as %s: %w", device, fstype, err)
	}
	after, err := probeWith(ctx, device, t.open)
	if err != nil {
		return fmt.Errorf("format %s as %s: checking the result: %w", device, fstype, err)
	}
	if after.Kind != Kind(fstype) {
		return fmt.Errorf("format %s as %s: %s reported success but the device now shows %s (%s)",
			device, fstype, name, after.Kind, after.Detail)
	}
	return nil
}

// refuseIfMounted wraps ErrInUse when the block device at path has any mount-table entry.
// Regular files (test images) pass: they are mounted only through a loop device, checked.
func refuseIfMounted(ctx context.Context, path string) error {
	dev, isBlock, err := blockNodeAt(path)
	if err != nil || !isBlock {
		return err
	}
	entries, err := BySource(ctx, dev.major, dev.minor)
	if err == nil && len(entries) > 0 {
		err = fmt.Errorf("%w: device %d:%d is mounted at %s (%d mounts); unmount it first",
			ErrInUse, dev.major, dev.minor, entries[0].Mountpoint, len(entries))
	}
	return err
}

func isExt(fstype string) bool { return fstype == "ext4" || fstype == "ext3" || fstype == "ext2" }

func unsupported(op, device, fstype string) error {
	return fmt.Errorf("%s %s: unsupported filesystem type %q; supported: ext4, ext3, ext2, xfs", op, device, fstype)
}

// Grow enlarges the filesystem on device, mounted at mountPoint, online to fill the device
// (resize2fs for ext2/3/4, xfs_growfs for xfs; the kernel must see the new size first). It
// refuses unless mountPoint holds device's filesystem, so a wrong pairing cannot grow
// another volume. Growing to the current size is a no-op.
func Grow(ctx context.Context, device, mountPoint, fstype string) error {
	return systemTools.grow(ctx, device, mountPoint, fstype)
}

// resize2fsNoCapability is resize2fs's report of EPERM from the online resize ioctl
// (the kernel's answer without CAP_SYS_RESOURCE).
const resize2fsNoCapability = "Permission denied to resize filesystem"

func (t fsTools) grow(ctx context.Context, device, mountPoint, fstype string) error {
	dev, err := blockDeviceOf(device)
	if err != nil {
		return fmt.Errorf("grow %s: %w", device, err)
	}
	entries, err := ByMountPoint(ctx, mountPoint)
	if err != nil {
		return fmt.Errorf("grow %s: %w", device, err)
	}
	if len(entries) == 0 {
		return fmt.Errorf("grow %s: nothing is mounted at %s; online grow needs the filesystem mounted there", device, mountPoint)
	}
	if top := entries[len(entries)-1]; uint32(top.Major) != dev.major || uint32(top.Minor) != dev.minor {
		return fmt.Errorf("grow %s: %s holds device %d:%d, not %s (%d:%d)", device, mountPoint, top.Major, top.Minor, device, dev.major, dev.minor)
	}
	var res toolResult
	switch {
	case isExt(fstype):
		res, err = t.run(ctx, "resize2fs", device)
	case fstype == "xfs":
		res, err = t.run(ctx, "xfs_growfs", "-d", mountPoint)
	default:
		return unsupported("grow", device, fstype)
	}
	switch {
	case err != nil && strings.Contains(res.output, resize2fsNoCapability):
		return fmt.Errorf("grow %s at %s: online ext4 resize needs CAP_SYS_RESOURCE, which this process lacks; "+
			"run the node plugin as a privileged container: %w", device, mountPoint, err)
	case err != nil:
		return fmt.Errorf("grow %s at %s: %w", device, mountPoint, err)
	}
	return nil
}

// Exit codes of e2fsck(8) (bits) and xfs_repair -n (8).
const (
	e2fsckCorrected       = 1 // errors corrected
	e2fsckCorrectedReboot = 2 // errors corrected, reboot if it was the root filesystem
	e2fsckUncorrected     = 4 // errors left uncorrected
	xfsRepairCorruption   = 1 // corruption found
	xfsRepairDirtyLog     = 2 // the log holds changes that mounting replays
)

// xfsDirtyLogAlert is how xfs_repair -n says it ignored a dirty log: its findings are then
// spurious, though it exits 1 (measured with xfsprogs 6.1 after a crash).
const xfsDirtyLogAlert = "valuable metadata changes in a log"

// Repair checks the filesystem on an unmounted device (ErrInUse while any mount exists)
// with only the repairs safe without a human: e2fsck -p for ext2/3/4 (it replays a dirty
// journal too), read-only xfs_repair -n for xfs. nil means it may be mounted; an error
// wrapping ErrNeedsRepair says how a human must repair it.
func Repair(ctx context.Context, device, fstype string) error {
	return systemTools.repair(ctx, device, fstype)
}

func (t fsTools) repair(ctx context.Context, device, fstype string) error {
	if err := refuseIfMounted(ctx, device); err != nil {
		return fmt.Errorf("refusing to check %s: %w", device, err)
	}
	if !isExt(fstype) && fstype != "xfs" {
		return unsupported("check", device, fstype)
	}
	byHand := func(finding, fix string, err error) error {
		return fmt.Errorf("%w: %s. Take a copy of the volume, run `%s %s` by hand on the node "+
			"(with the volume not in use), then retry. Details: %w", ErrNeedsRepair, finding, fix, device, err)
	}
	var res toolResult
	var err error
	if isExt(fstype) {
		// -p (preen) fixes only what is safe unattended and exits 4 for the rest (no -y guessing).
		res, err = t.run(ctx, "e2fsck", "-p", device)
		switch {
		case err == nil, res.exitCode >= 0 && res.exitCode&^(e2fsckCorrected|e2fsckCorrectedReboot) == 0:
			return nil
		case res.exitCode > 0 && res.exitCode&e2fsckUncorrected != 0:
			return byHand("e2fsck found errors on "+device+" it cannot fix safely on its own", "e2fsck -f", err)
		}
	} else {
		// xfs has no safe unattended repair (xfs_repair rewrites metadata, may move files to
		// lost+found): only look (-n). With a dirty log the look is meaningless; the mount
		// replays the log and the kernel checks what it reads.
		res, err = t.run(ctx, "xfs_repair", "-n", device)
		switch {
		case err == nil, res.exitCode == xfsRepairDirtyLog, strings.Contains(res.output, xfsDirtyLogAlert):
			return nil
		case res.exitCode == xfsRepairCorruption:
			return byHand("xfs_repair -n found corruption on "+device, "xfs_repair", err)
		}
	}
	return fmt.Errorf("check %s: %w", device, err)
}
