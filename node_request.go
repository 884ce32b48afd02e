package main

import (
	"path/filepath"
	"slices"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"srvlab.io/rds-csi/mount"
	"srvlab.io/rds-csi/nvme"
)

// requireVolumeID checks a request's volume ID.
func requireVolumeID(id string) error {
	if id == "" {
		return status.Error(codes.InvalidArgument, "volume_id is missing")
	}
	if err := validVolumeIDForFile(id); err != nil {
		return status.Errorf(codes.InvalidArgument, "%v; this driver's volume IDs are PV names (pvc-<uuid>)", err)
	}
	return nil
}

// requirePath checks that a path field is given and absolute: mountinfo shows absolute
// paths only, and a relative one would silently match nothing.
func requirePath(field, p string) error {
	if p == "" {
		return status.Errorf(codes.InvalidArgument, "%s is missing", field)
	}
	if !filepath.IsAbs(p) {
		return status.Errorf(codes.InvalidArgument, "%s %q is not an absolute path", field, p)
	}
	return nil
}

// lockVolume takes the volume's lock without waiting: a concurrent call for the same
// volume answers Aborted and the CO retries, so a stuck call never piles callers up.
func (n *nodeService) lockVolume(id string) (func(), error) {
	release, ok := n.locks.tryLock(id)
	if !ok {
		return nil, status.Errorf(codes.Aborted, "another operation on volume %s is still running on this node; it is retried when that one finishes", id)
	}
	return release, nil
}

// devNum is a block device number.
type devNum struct{ major, minor uint32 }

func entryDev(e *mount.Entry) devNum { return devNum{uint32(e.Major), uint32(e.Minor)} }
func diskDev(d *nvme.Disk) devNum    { return devNum{d.Major, d.Minor} }
func (r *stagingRecord) dev() devNum { return devNum{r.Major, r.Minor} }

// top returns the visible (last) of the entries stacked at one mount point.
func top(entries []*mount.Entry) *mount.Entry {
	if len(entries) == 0 {
		return nil
	}
	return entries[len(entries)-1]
}

// mountReadOnly reports whether a mount is read-only, per mount or for the whole
// filesystem (ext4 with errors=remount-ro after I/O errors shows "ro" in the super
// options).
func mountReadOnly(e *mount.Entry) bool {
	return hasOption(e.Options, "ro") || hasOption(e.VFSOptions, "ro")
}

// hasOption reports whether a comma-separated mountinfo option field holds opt.
func hasOption(options, opt string) bool { return slices.Contains(strings.Split(options, ","), opt) }
