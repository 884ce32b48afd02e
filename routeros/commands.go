package routeros

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// The commands are those of docs/routeros-cli.md, built only here and in files.go, from
// validated values that are quoted once more on the way out.

// DefaultNVMePort is the NVMe/TCP port used when a request gives none.
const DefaultNVMePort = 4420

// Disk is a `/disk` item as the RDS reports it.
type Disk struct {
	Slot          string
	Type          string // "file" for volumes, "raid", "partition", …
	FilePath      string // backing file, absolute ("/pool/dir/x.img"); file disks only
	FileSizeText  string // file-size as printed: human and rounded ("50.0GiB"); use Size
	MountPoint    string
	NQN           string // nvme-tcp-server-nqn, or the slot where that is absent or empty (RouterOS < 7.21)
	AllowHostName string // nvme-tcp-server-allow-host-name ("" = any host)
	Model         string
	Flags         string
	Comment       string
	Size          int64 // exact bytes
	Free          int64 // exact bytes; file systems (pools) only
	NVMeExport    bool
	NVMePort      int
	Props         map[string]string // every property as printed (see Item.Props)
}

// Pool is the capacity of the disk that holds a volume path.
type Pool struct {
	Name       string // the pool's mount point (the first component of the path)
	Size, Free int64
}

// PoolName is the pool a path lies on: its first component, the mount point of the pool's
// disk.
func PoolName(path string) string {
	name, _, _ := strings.Cut(strings.TrimPrefix(path, "/"), "/")
	return name
}

// diskFromItem maps a parsed item. A number that is present but unreadable is an error:
// a zero where the RDS printed something else would be a wrong size, not an unknown one.
func diskFromItem(it Item) (Disk, error) {
	p := it.Props
	d := Disk{Slot: p["slot"], Type: p["type"], FilePath: p["file-path"], FileSizeText: p["file-size"],
		MountPoint: p["mount-point"], NQN: cmp.Or(p["nvme-tcp-server-nqn"], p["slot"]),
		AllowHostName: p["nvme-tcp-server-allow-host-name"], Model: p["model"], Flags: it.Flags,
		Comment: it.Comment, NVMeExport: p["nvme-tcp-export"] == "yes", Props: p}
	for _, f := range [...]struct {
		key string
		dst *int64
	}{{"size", &d.Size}, {"free", &d.Free}} {
		if v := p[f.key]; v != "" {
			n, err := parseInteger(v)
			if err != nil {
				return Disk{}, fmt.Errorf("disk %q: %s: %w", d.Slot, f.key, err)
			}
			*f.dst = n
		}
	}
	if v := p["nvme-tcp-server-port"]; v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || n > 65535 {
			return Disk{}, fmt.Errorf("disk %q: nvme-tcp-server-port %q is not a port", d.Slot, v)
		}
		d.NVMePort = n
	}
	return d, nil
}

// CreateDiskRequest describes a file disk to create and export over NVMe/TCP.
type CreateDiskRequest struct {
	Slot      string
	FilePath  string // absolute: /pool/dir/x.img
	SizeBytes int64  // rounded up to a whole MiB; 0 = the existing file's size (restore/clone)
	Port      int    // NVMe/TCP port; 0 = DefaultNVMePort
	NQN       string // subsystem NQN; "" leaves it unset (the NQN is then the slot)
	// Comment is the disk's comment ("" = none), set in the same command so a disk never
	// exists without it; restores and clones record their source in it.
	Comment string
}

// CreateDisk creates the disk and returns it as the RDS reports it after creation (exact
// size, NQN, port, path): callers must use the returned NQN, which is the slot on RouterOS
// before 7.21. There the RDS rejects nvme-tcp-server-nqn; the disk is then created without
// it and later creates on this connection leave it out at once. A slot in use gives
// ErrAlreadyExists, a full pool ErrNoSpace.
func (c *Client) CreateDisk(ctx context.Context, req CreateDiskRequest) (*Disk, error) {
	port := cmp.Or(req.Port, DefaultNVMePort)
	bad := firstErr(ValidateSlot(req.Slot), c.validatePath(req.FilePath),
		check(req.SizeBytes >= 0 && req.SizeBytes <= MaxDiskSize, "size %d bytes is outside 0 to %d", req.SizeBytes, MaxDiskSize),
		check(port >= 1 && port <= 65535, "NVMe/TCP port %d is not a TCP port", req.Port),
		validateOptionalNQN(req.NQN), ValidateComment(req.Comment))
	return do(c, ctx, "CreateDisk", bad, func(o call) (*Disk, error) { return o.createDisk(req, port) })
}

func (o call) createDisk(req CreateDiskRequest, port int) (*Disk, error) {
	c := o.Client
	withNQN := req.NQN != "" && !c.noNQNArg.Load()
	cmd, nqnAt := createCommand(req, port, withNQN)
	_, err := o.run(cmd)
	if withNQN && nqnRejected(err, nqnAt) {
		c.noNQNArg.Store(true)
		c.log.Info("the RDS rejects nvme-tcp-server-nqn (RouterOS before 7.21): creating disks without it; their NQN is the slot", "slot", req.Slot)
		cmd, _ = createCommand(req, port, false)
		_, err = o.run(cmd)
	}
	if err != nil {
		return nil, err
	}
	got, err := o.getDisk(req.Slot)
	if errors.Is(err, ErrNotFound) {
		return nil, &CommandError{Op: o.op, Kind: KindOther, Command: cmd, Exit: -1,
			Err: fmt.Errorf("disk %q was created but is not listed on read-back", req.Slot)}
	}
	return got, err
}

// createCommand builds the create command; nqnAt is the span of the NQN argument, to tell
// whether a syntax error points at it.
func createCommand(req CreateDiskRequest, port int, withNQN bool) (cmd string, nqnAt [2]int) {
	cmd = "/disk add type=file file-path=" + quote(req.FilePath)
	if req.SizeBytes > 0 {
		cmd += " file-size=" + FormatSize(req.SizeBytes)
	}
	cmd += " slot=" + quote(req.Slot) + " nvme-tcp-export=yes nvme-tcp-server-port=" + strconv.Itoa(port)
	if req.Comment != "" {
		cmd += " comment=" + quote(req.Comment)
	}
	if withNQN {
		nqnAt[0] = len(cmd) + 1
		cmd += " nvme-tcp-server-nqn=" + quote(req.NQN)
		nqnAt[1] = len(cmd)
	}
	return cmd, nqnAt
}

var columnRE = regexp.MustCompile(`\(line 1 column (\d+)\)`)

// nqnRejected: the error is RouterOS refusing the nvme-tcp-server-nqn argument (it names
// the argument, or its syntax error points into it), not some other problem.
func nqnRejected(err error, span [2]int) bool {
	var ce *CommandError
	if !errors.As(err, &ce) || ce.Kind != KindInvalidArgument {
		return false
	}
	if strings.Contains(ce.Output, "nvme-tcp-server-nqn") {
		return true
	}
	m := columnRE.FindStringSubmatch(ce.Output)
	if m == nil {
		return false
	}
	col, _ := strconv.Atoi(m[1]) // 1-based; allow for 0-based counting too
	return col >= span[0] && col <= span[1]+1
}

// GetDisk returns the disk in slot, or ErrNotFound (also for an empty or header-only reply).
func (c *Client) GetDisk(ctx context.Context, slot string) (*Disk, error) {
	return do(c, ctx, "GetDisk", ValidateSlot(slot), func(o call) (*Disk, error) { return o.getDisk(slot) })
}

func (o call) getDisk(slot string) (*Disk, error) {
	cmd := "/disk print detail where slot=" + quote(slot)
	disks, err := o.printDisks(cmd)
	if err != nil {
		return nil, err
	}
	disks = slices.DeleteFunc(disks, func(d Disk) bool { return d.Slot != slot })
	switch len(disks) {
	case 0:
		return nil, o.fail(KindNotFound, cmd, "no disk with slot %q", slot)
	case 1:
		return &disks[0], nil
	}
	return nil, o.fail(KindOther, cmd, "%d disks have slot %q", len(disks), slot)
}

// printDisks runs a `/disk print detail` and maps its items.
func (o call) printDisks(cmd string) ([]Disk, error) {
	items, err := printDetail(o, cmd, ParseDetail)
	if err != nil {
		return nil, err
	}
	disks := make([]Disk, len(items))
	for i, it := range items {
		if disks[i], err = diskFromItem(it); err != nil {
			return nil, &CommandError{Op: o.op, Kind: KindOther, Command: cmd, Err: err}
		}
	}
	return disks, nil
}

// ListDisks returns the disks whose slot starts with slotPrefix ("" = all), sorted by slot.
func (c *Client) ListDisks(ctx context.Context, slotPrefix string) ([]Disk, error) {
	return do(c, ctx, "ListDisks", validateSlotPrefix(slotPrefix), func(o call) ([]Disk, error) {
		disks, err := o.printDisks("/disk print detail where slot~" + quote("^"+slotPrefix))
		disks = slices.DeleteFunc(disks, func(d Disk) bool { return !strings.HasPrefix(d.Slot, slotPrefix) })
		slices.SortFunc(disks, func(a, b Disk) int { return strings.Compare(a.Slot, b.Slot) })
		return disks, err
	})
}

// ResizeDisk grows a file disk to at least sizeBytes (rounded up to a whole MiB) and returns
// it as the RDS reports it. It never shrinks: a disk already as large is returned as is.
func (c *Client) ResizeDisk(ctx context.Context, slot string, sizeBytes int64) (*Disk, error) {
	bad := firstErr(ValidateSlot(slot), check(sizeBytes > 0 && sizeBytes <= MaxDiskSize, "size %d bytes is outside 1 to %d", sizeBytes, MaxDiskSize))
	return do(c, ctx, "ResizeDisk", bad, func(o call) (*Disk, error) { return o.resizeDisk(slot, sizeBytes) })
}

func (o call) resizeDisk(slot string, sizeBytes int64) (*Disk, error) {
	cur, err := o.getDisk(slot)
	switch {
	case err != nil:
		return nil, err
	case cur.Type != "file":
		return nil, invalidf("disk %q is of type %q: only file disks are resized", slot, cur.Type)
	case cur.Size >= sizeBytes:
		return cur, nil
	}
	if _, err := o.run("/disk set [find slot=" + quote(slot) + "] file-size=" + FormatSize(sizeBytes)); err != nil {
		return nil, err
	}
	return o.getDisk(slot)
}

// RemoveDisk removes a file disk; a slot that does not exist is not an error. It does not
// delete the backing file (RouterOS keeps it): call RemoveFile too.
func (c *Client) RemoveDisk(ctx context.Context, slot string) error {
	_, err := do(c, ctx, "RemoveDisk", ValidateSlot(slot), func(o call) (any, error) {
		// a look first, so that a slot naming a pool's disk is never removed
		cur, err := o.getDisk(slot)
		switch {
		case errors.Is(err, ErrNotFound):
			return nil, nil
		case err != nil:
			return nil, err
		case cur.Type != "file":
			return nil, invalidf("disk %q is of type %q: only file disks are removed", slot, cur.Type)
		}
		return nil, ignoreNotFound(o.run("/disk remove [find slot=" + quote(slot) + "]")) // removed meanwhile
	})
	return err
}

// SetAllowedHost sets the host NQN allowed to connect to the disk's export; "" clears it
// (any host). The RDS's answer is read back and checked.
func (c *Client) SetAllowedHost(ctx context.Context, slot, hostNQN string) error {
	_, err := do(c, ctx, "SetAllowedHost", firstErr(ValidateSlot(slot), validateOptionalNQN(hostNQN)), func(o call) (any, error) {
		cmd := "/disk set [find slot=" + quote(slot) + "] nvme-tcp-server-allow-host-name=" + quote(hostNQN)
		if _, err := o.run(cmd); err != nil {
			return nil, err
		}
		// `set [find …]` matching nothing succeeds silently: the read-back tells
		d, err := o.getDisk(slot)
		if err == nil && d.AllowHostName != hostNQN {
			return nil, o.fail(KindOther, cmd, "disk %q reports allow-host %q after setting %q", slot, d.AllowHostName, hostNQN)
		}
		return nil, err
	})
	return err
}

// PoolCapacity returns size and free space of the pool holding path: the disk whose
// mount-point is path's first component.
func (c *Client) PoolCapacity(ctx context.Context, path string) (Pool, error) {
	return do(c, ctx, "PoolCapacity", validateCleanPath(path), func(o call) (Pool, error) { return o.poolCapacity(path) })
}

func (o call) poolCapacity(path string) (Pool, error) {
	name := PoolName(path)
	cmd := "/disk print detail where mount-point=" + quote(name)
	disks, err := o.printDisks(cmd)
	if err != nil {
		return Pool{}, err
	}
	for _, d := range disks {
		if d.MountPoint != name {
			continue
		}
		if _, ok := d.Props["free"]; !ok {
			return Pool{}, o.fail(KindOther, cmd, "the disk mounted at %q reports no free space", name)
		}
		return Pool{Name: name, Size: d.Size, Free: d.Free}, nil
	}
	return Pool{}, o.fail(KindNotFound, cmd, "no disk is mounted at %q: the first component of the volume path must name a pool", name)
}

// printDetail runs a `print detail` command and parses its output with parse.
func printDetail[T any](o call, cmd string, parse func(string) ([]T, error)) ([]T, error) {
	out, err := o.run(cmd)
	if err != nil {
		return nil, err
	}
	v, err := parse(out)
	if err != nil {
		return nil, &CommandError{Op: o.op, Kind: KindOther, Command: cmd, Output: clip(out, 2000), Err: err}
	}
	return v, nil
}

// fail reports an answer of the RDS the operation cannot accept.
func (o call) fail(kind Kind, cmd, format string, args ...any) error {
	return &CommandError{Op: o.op, Kind: kind, Command: cmd, Output: fmt.Sprintf(format, args...)}
}

func ignoreNotFound(_ string, err error) error {
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	return err
}
