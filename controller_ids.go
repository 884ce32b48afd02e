package main

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"path"
	"slices"
	"strings"

	"srvlab.io/rds-csi/routeros"
)

// maxVolumeIDLen bounds volume IDs that are request names used as they are. Kubernetes
// names PVs pvc-<uuid> (40 characters); 63 is a DNS label, which every slot we make fits.
const maxVolumeIDLen = 63

// derivedIDPrefix starts the IDs derived from names that cannot be slots.
const derivedIDPrefix = "vol-"

// nqnPrefix is the subsystem NQN the controller asks for; the earlier RDS driver used the
// same, so a node's --managed-nqn-prefix covers the volumes of both.
const nqnPrefix = "nqn.2000-02.com.mikrotik:"

// volumeIDFor maps a CreateVolume name to the volume ID, which is also the RDS slot and the
// file name. A name that is a valid slot is used as it is: that is the provisioner's
// pvc-<uuid>, so PVs made by the earlier RDS driver (which did the same) keep their IDs.
// Any other name — the CSI spec makes the name an arbitrary idempotency key, and
// csi-sanity sends upper-case names longer than 63 characters — maps to a deterministic
// slot, "vol-" and the first 24 hex digits (96 bits) of the name's SHA-256, so a retried
// CreateVolume with the same name always finds the same volume.
func volumeIDFor(name string) string { return idFor(name, derivedIDPrefix) }

// idFor is name when it can be an ID, else prefix and 96 bits of the name's SHA-256.
func idFor(name, prefix string) string {
	if isVolumeID(name) {
		return name
	}
	sum := sha256.Sum256([]byte(name))
	return prefix + hex.EncodeToString(sum[:])[:24]
}

// isVolumeID reports whether id can name a volume of this driver: a slot of at most 63
// characters of [a-z0-9-], starting and ending with a letter or digit. An ID that is not
// one can never exist on the RDS: DeleteVolume answers OK for it, the other RPCs NotFound.
func isVolumeID(id string) bool {
	return len(id) <= maxVolumeIDLen && routeros.ValidateSlot(id) == nil
}

// defaultNQN is the subsystem NQN requested for a volume. RouterOS before 7.21 ignores it
// and exports the slot as the NQN: callers use the NQN the RDS reports, never this.
func defaultNQN(id string) string { return nqnPrefix + id }

// volumeFileName is the backing file's name in its volume path.
func volumeFileName(id string) string { return id + ".img" }

// isUnder reports whether p is base or lies below it, comparing whole path components
// (/pool/vol is not under /pool/v). Both are clean absolute paths.
func isUnder(p, base string) bool {
	return p == base || strings.HasPrefix(p, strings.TrimSuffix(base, "/")+"/")
}

// volumeBases returns the directories volumes may live in: --rds-volume-path first, then
// --rds-allowed-paths, each checked to be a clean absolute RouterOS path.
func volumeBases(cfg *Config) ([]string, error) {
	bases := append([]string{cfg.RDSVolumePath}, cfg.RDSAllowedPaths...)
	for i, b := range bases {
		flag := "--rds-volume-path"
		if i > 0 {
			flag = "--rds-allowed-paths"
		}
		// a file below the base must be a valid path: that checks the base's form
		if err := routeros.ValidatePath(b + "/x.img"); err != nil || b == "" || path.Clean(b) != b {
			return nil, fmt.Errorf("%s %q is not a clean absolute RouterOS path like /storage-pool/metal-csi (letters, digits, '.', '_', '-' and '/' only)", flag, b)
		}
	}
	return slices.Compact(bases), nil
}

// managedDisk says why a disk found under a volume's slot is not a volume of this driver
// ("" when it is one): only file disks whose file is <base>/…/<id>.img below a configured
// base are ever changed or removed.
func (c *controllerService) managedDisk(d *routeros.Disk) string {
	switch {
	case d.Type != "file":
		return fmt.Sprintf("the disk with slot %q is of type %q, not a file disk made by this driver", d.Slot, d.Type)
	case path.Base(d.FilePath) != volumeFileName(d.Slot):
		return fmt.Sprintf("the disk with slot %q uses file %q, not %s", d.Slot, d.FilePath, volumeFileName(d.Slot))
	case !c.underBases(path.Dir(d.FilePath)):
		return fmt.Sprintf("the disk with slot %q uses file %q outside --rds-volume-path and --rds-allowed-paths (%s); add its directory to --rds-allowed-paths if this driver should manage it",
			d.Slot, d.FilePath, strings.Join(c.bases, ", "))
	}
	return ""
}

func (c *controllerService) underBases(dir string) bool {
	return slices.ContainsFunc(c.bases, func(b string) bool { return isUnder(dir, b) })
}
