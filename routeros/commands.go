package routeros

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// The commands are those of docs/routeros-cli.md, built only here, from validated values
// that are quoted once more on the way out.

// DefaultNVMePort is the NVMe/TCP port used when a request gives none.
const DefaultNVMePort = 4420

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
func (c *Client) CreateDisk(ctx context.Context, req CreateDiskRequest) (d *Disk, err error) {
	const op = "CreateDisk"
	ctx, end := c.begin(ctx, op)
	defer end(&err)
	if err := ValidateSlot(req.Slot); err != nil {
		return nil, err
	}
	if err := c.validatePath(req.FilePath); err != nil {
		return nil, err
	}
	if req.SizeBytes < 0 || req.SizeBytes > MaxDiskSize {
		return nil, invalidf("size %d bytes is outside 0 to %d", req.SizeBytes, MaxDiskSize)
	}
	port := req.Port
	if port == 0 {
		port = DefaultNVMePort
	}
	if port < 1 || port > 65535 {
		return nil, invalidf("NVMe/TCP port %d is not a TCP port", req.Port)
	}
	if req.NQN != "" {
		if err := ValidateNQN(req.NQN); err != nil {
			return nil, err
		}
	}
	if err := ValidateComment(req.Comment); err != nil {
		return nil, err
	}
	withNQN := req.NQN != "" && !c.noNQNArg.Load()
	cmd, nqnAt := createCommand(req, port, withNQN)
	_, err = c.run(ctx, op, cmd)
	if withNQN && nqnRejected(err, nqnAt) {
		c.noNQNArg.Store(true)
		c.log.Info("the RDS rejects nvme-tcp-server-nqn (RouterOS before 7.21): creating disks without it; their NQN is the slot", "slot", req.Slot)
		cmd, _ = createCommand(req, port, false)
		_, err = c.run(ctx, op, cmd)
	}
	if err != nil {
		return nil, err
	}
	got, err := c.getDisk(ctx, op, req.Slot)
	if errors.Is(err, ErrNotFound) {
		return nil, &CommandError{Op: op, Kind: KindOther, Command: cmd, Exit: -1,
			Err: fmt.Errorf("disk %q was created but is not listed on read-back", req.Slot)}
	}
	return got, err
}

// createCommand builds the create command; nqnAt is the span of the NQN argument, to tell
// whether a syntax error points at it.
func createCommand(req CreateDiskRequest, port int, withNQN bool) (string, [2]int) {
	var b strings.Builder
	b.WriteString("/disk add type=file file-path=" + quote(req.FilePath))
	if req.SizeBytes > 0 {
		b.WriteString(" file-size=" + FormatSize(req.SizeBytes))
	}
	b.WriteString(" slot=" + quote(req.Slot) + " nvme-tcp-export=yes nvme-tcp-server-port=" + strconv.Itoa(port))
	if req.Comment != "" {
		b.WriteString(" comment=" + quote(req.Comment))
	}
	var span [2]int
	if withNQN {
		b.WriteString(" ")
		span[0] = b.Len()
		b.WriteString("nvme-tcp-server-nqn=" + quote(req.NQN))
		span[1] = b.Len()
	}
	return b.String(), span
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
func (c *Client) GetDisk(ctx context.Context, slot string) (d *Disk, err error) {
	const op = "GetDisk"
	ctx, end := c.begin(ctx, op)
	defer end(&err)
	if err := ValidateSlot(slot); err != nil {
		return nil, err
	}
	return c.getDisk(ctx, op, slot)
}

func (c *Client) getDisk(ctx context.Context, op, slot string) (*Disk, error) {
	cmd := "/disk print detail where slot=" + quote(slot)
	disks, err := c.printDisks(ctx, op, cmd)
	if err != nil {
		return nil, err
	}
	var found []Disk
	for _, d := range disks {
		if d.Slot == slot {
			found = append(found, d)
		}
	}
	switch len(found) {
	case 0:
		return nil, &CommandError{Op: op, Kind: KindNotFound, Command: cmd, Exit: 0, Output: fmt.Sprintf("no disk with slot %q", slot)}
	case 1:
		return &found[0], nil
	}
	return nil, &CommandError{Op: op, Kind: KindOther, Command: cmd, Exit: 0, Output: fmt.Sprintf("%d disks have slot %q", len(found), slot)}
}

// printDisks runs a `/disk print detail` and maps its items.
func (c *Client) printDisks(ctx context.Context, op, cmd string) ([]Disk, error) {
	out, err := c.run(ctx, op, cmd)
	if err != nil {
		return nil, err
	}
	items, err := ParseDetail(out)
	if err != nil {
		return nil, &CommandError{Op: op, Kind: KindOther, Command: cmd, Exit: 0, Output: clip(out, 2000), Err: err}
	}
	disks := make([]Disk, 0, len(items))
	for _, it := range items {
		d, err := diskFromItem(it)
		if err != nil {
			return nil, &CommandError{Op: op, Kind: KindOther, Command: cmd, Exit: 0, Err: err}
		}
		disks = append(disks, d)
	}
	return disks, nil
}

// ListDisks returns the disks whose slot starts with slotPrefix ("" = all), sorted by slot.
func (c *Client) ListDisks(ctx context.Context, slotPrefix string) (disks []Disk, err error) {
	const op = "ListDisks"
	ctx, end := c.begin(ctx, op)
	defer end(&err)
	if err := validateSlotPrefix(slotPrefix); err != nil {
		return nil, err
	}
	all, err := c.printDisks(ctx, op, "/disk print detail where slot~"+quote("^"+slotPrefix))
	if err != nil {
		return nil, err
	}
	disks = all[:0]
	for _, d := range all {
		if strings.HasPrefix(d.Slot, slotPrefix) {
			disks = append(disks, d)
		}
	}
	slices.SortFunc(disks, func(a, b Disk) int { return strings.Compare(a.Slot, b.Slot) })
	return disks, nil
}

// ResizeDisk grows a file disk to at least sizeBytes (rounded up to a whole MiB) and returns
// it as the RDS reports it. It never shrinks: a disk already as large is returned as is.
func (c *Client) ResizeDisk(ctx context.Context, slot string, sizeBytes int64) (d *Disk, err error) {
	const op = "ResizeDisk"
	ctx, end := c.begin(ctx, op)
	defer end(&err)
	if err := ValidateSlot(slot); err != nil {
		return nil, err
	}
	if sizeBytes <= 0 || sizeBytes > MaxDiskSize {
		return nil, invalidf("size %d bytes is outside 1 to %d", sizeBytes, MaxDiskSize)
	}
	cur, err := c.getDisk(ctx, op, slot)
	if err != nil {
		return nil, err
	}
	if cur.Type != "file" {
		return nil, invalidf("disk %q is of type %q: only file disks are resized", slot, cur.Type)
	}
	if cur.Size >= sizeBytes {
		return cur, nil
	}
	if _, err := c.run(ctx, op, "/disk set [find slot="+quote(slot)+"] file-size="+FormatSize(sizeBytes)); err != nil {
		return nil, err
	}
	return c.getDisk(ctx, op, slot)
}

// RemoveDisk removes a file disk; a slot that does not exist is not an error. It does not
// delete the backing file (RouterOS keeps it): call RemoveFile too.
func (c *Client) RemoveDisk(ctx context.Context, slot string) (err error) {
	const op = "RemoveDisk"
	ctx, end := c.begin(ctx, op)
	defer end(&err)
	if err := ValidateSlot(slot); err != nil {
		return err
	}
	// a look first, so that a slot naming a pool's disk is never removed
	cur, err := c.getDisk(ctx, op, slot)
	switch {
	case errors.Is(err, ErrNotFound):
		return nil
	case err != nil:
		return err
	case cur.Type != "file":
		return invalidf("disk %q is of type %q: only file disks are removed", slot, cur.Type)
	}
	_, err = c.run(ctx, op, "/disk remove [find slot="+quote(slot)+"]")
	if errors.Is(err, ErrNotFound) {
		return nil // removed meanwhile
	}
	return err
}

// SetAllowedHost sets the host NQN allowed to connect to the disk's export; "" clears it
// (any host). The RDS's answer is read back and checked.
func (c *Client) SetAllowedHost(ctx context.Context, slot, hostNQN string) (err error) {
	const op = "SetAllowedHost"
	ctx, end := c.begin(ctx, op)
	defer end(&err)
	if err := ValidateSlot(slot); err != nil {
		return err
	}
	if hostNQN != "" {
		if err := ValidateNQN(hostNQN); err != nil {
			return err
		}
	}
	cmd := "/disk set [find slot=" + quote(slot) + "] nvme-tcp-server-allow-host-name=" + quote(hostNQN)
	if _, err := c.run(ctx, op, cmd); err != nil {
		return err
	}
	// `set [find …]` matching nothing succeeds silently: the read-back tells
	d, err := c.getDisk(ctx, op, slot)
	if err != nil {
		return err
	}
	if d.AllowHostName != hostNQN {
		return &CommandError{Op: op, Kind: KindOther, Command: cmd, Exit: 0,
			Output: fmt.Sprintf("disk %q reports allow-host %q after setting %q", slot, d.AllowHostName, hostNQN)}
	}
	return nil
}

// PoolCapacity returns size and free space of the pool holding path: the disk whose
// mount-point is path's first component.
func (c *Client) PoolCapacity(ctx context.Context, path string) (p Pool, err error) {
	const op = "PoolCapacity"
	ctx, end := c.begin(ctx, op)
	defer end(&err)
	if err := validateCleanPath(path); err != nil {
		return Pool{}, err
	}
	name := PoolName(path)
	cmd := "/disk print detail where mount-point=" + quote(name)
	disks, err := c.printDisks(ctx, op, cmd)
	if err != nil {
		return Pool{}, err
	}
	for _, d := range disks {
		if d.MountPoint != name {
			continue
		}
		if _, ok := d.Props["free"]; !ok {
			return Pool{}, &CommandError{Op: op, Kind: KindOther, Command: cmd, Exit: 0,
				Output: fmt.Sprintf("the disk mounted at %q reports no free space", name)}
		}
		return Pool{Name: name, Size: d.Size, Free: d.Free}, nil
	}
	return Pool{}, &CommandError{Op: op, Kind: KindNotFound, Command: cmd, Exit: 0,
		Output: fmt.Sprintf("no disk is mounted at %q: the first component of the volume path must name a pool", name)}
}

// validatePath checks a file path against the configured bases.
func (c *Client) validatePath(p string) error {
	return ValidatePath(p, c.cfg.AllowedBases...)
}
