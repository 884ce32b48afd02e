package routeros

import (
	"fmt"
	"strconv"
	"strings"
)

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
	d := Disk{
		Slot:          p["slot"],
		Type:          p["type"],
		FilePath:      p["file-path"],
		FileSizeText:  p["file-size"],
		MountPoint:    p["mount-point"],
		NQN:           p["nvme-tcp-server-nqn"],
		AllowHostName: p["nvme-tcp-server-allow-host-name"],
		Model:         p["model"],
		Flags:         it.Flags,
		Comment:       it.Comment,
		NVMeExport:    p["nvme-tcp-export"] == "yes",
		Props:         p,
	}
	if d.NQN == "" {
		d.NQN = d.Slot
	}
	for _, f := range []struct {
		key string
		dst *int64
	}{{"size", &d.Size}, {"free", &d.Free}} {
		if v, ok := p[f.key]; ok && v != "" {
			n, err := parseInteger(v)
			if err != nil {
				return Disk{}, fmt.Errorf("disk %q: %s: %w", d.Slot, f.key, err)
			}
			*f.dst = n
		}
	}
	if v, ok := p["nvme-tcp-server-port"]; ok && v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || n > 65535 {
			return Disk{}, fmt.Errorf("disk %q: nvme-tcp-server-port %q is not a port", d.Slot, v)
		}
		d.NVMePort = n
	}
	return d, nil
}
