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

// mkfsArgs are the options of mkfs.<fstype> for each filesystem Format makes.
var mkfsArgs = map[string][]string{
	// No -F: the probe already proved the device blank, and without -F
	// mke2fs keeps its own refusal to touch a mounted device. It does not
	// prompt without a terminal. -m0: a volume is not a root filesystem
	// and users expect all of the capacity they asked for. nodiscard: the
	// device is a fresh sparse file on the appliance; discarding it only
	// costs time over the network.
	"ext4": {"-q", "-m0", "-E", "nodiscard"},
	// No -f, so mkfs.xfs's own check for an existing signature stays as a
	// second safety net. -K: skip discard, as above.
	"xfs": {"-q", "-K"},
}

// Format makes a fstype ("ext4" or "xfs") filesystem on device, but only
// when its own probe sees a blank device and nothing of it is mounted. Any
// doubt (a read error, a short device, any signature or non-zero byte)
// refuses with an error wrapping ErrNotBlank or the probe's error; the
// caller cannot skip the probe. After mkfs it probes again to confirm the
// filesystem is there.
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

// refuseIfMounted returns an error wrapping ErrInUse when the block device
// at path has any mount-table entry. Regular files (test images) pass:
// they are only ever mounted through a loop device, which is checked.
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

// isExt reports whether fstype is checked and grown with the e2fsprogs tools.
func isExt(fstype string) bool { return fstype == "ext4" || fstype == "ext3" || fstype == "ext2" }

// unsupported is the error for a filesystem Repair and Grow do not handle.
func unsupported(op, device, fstype string) error {
	return fmt.Errorf("%s %s: unsupported filesystem type %q; supported: ext4, ext3, ext2, xfs", op, device, fstype)
}

// Grow enlarges the filesystem on device, mounted at mountPoint, to fill
// the device, online: resize2fs on the device for ext2/3/4, xfs_growfs on
// the mount point for xfs. Make the kernel see the new device size first.
// It refuses unless mountPoint really holds device's filesystem, so a
// wrong pairing cannot grow another volume. Growing to the size the
// filesystem already has is a no-op.
func Grow(ctx context.Context, device, mountPoint, fstype string) error {
	return systemTools.grow(ctx, device, mountPoint, fstype)
}

// resize2fsNoCapability is resize2fs's report of EPERM from the online
// resize ioctl, which the kernel returns without CAP_SYS_RESOURCE.
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

// e2fsck exit-code bits (e2fsck(8)).
const (
	e2fsckCorrected       = 1 // errors corrected
	e2fsckCorrectedReboot = 2 // errors corrected, reboot if it was the root filesystem
	e2fsckUncorrected     = 4 // errors left uncorrected
)

// xfs_repair -n exit codes (xfs_repair(8)).
const (
	xfsRepairCorruption = 1 // corruption found
	xfsRepairDirtyLog   = 2 // the log holds changes that mounting replays
)

// xfsDirtyLogAlert is how xfs_repair -n says it ignored a dirty log; its
// findings are then spurious (it exits 1 anyway), as measured with
// xfsprogs 6.1 after a crash.
const xfsDirtyLogAlert = "valuable metadata changes in a log"

// Repair checks the filesystem on an unmounted device (ErrInUse while any
// mount of it exists) and applies only the repairs that are safe without a
// human: e2fsck -p for ext2/3/4 (it also replays a dirty journal), a read-only
// xfs_repair -n for xfs. nil means the filesystem may be mounted; an error
// wrapping ErrNeedsRepair means a human must repair it, and says how.
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
	// The hint for corruption a safe check cannot fix.
	byHand := func(finding, fix string, err error) error {
		return fmt.Errorf("%w: %s. Take a copy of the volume, run `%s %s` by hand on the node "+
			"(with the volume not in use), then retry. Details: %w", ErrNeedsRepair, finding, fix, device, err)
	}
	var res toolResult
	var err error
	if isExt(fstype) {
		// -p (preen) fixes only what is safe to fix unattended and exits 4
		// for anything else, instead of guessing with -y.
		res, err = t.run(ctx, "e2fsck", "-p", device)
		switch {
		case err == nil, res.exitCode >= 0 && res.exitCode&^(e2fsckCorrected|e2fsckCorrectedReboot) == 0:
			return nil
		case res.exitCode > 0 && res.exitCode&e2fsckUncorrected != 0:
			return byHand("e2fsck found errors on "+device+" it cannot fix safely on its own", "e2fsck -f", err)
		}
	} else {
		// xfs has no safe unattended repair: xfs_repair rewrites metadata and
		// may move files to lost+found, so we only look (-n). With a dirty log
		// (after a crash) the look is meaningless; the mount replays the log
		// and the kernel checks what it reads.
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
