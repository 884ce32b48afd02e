package nvme

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

// Identity is the host's NVMe identity, passed in every connect: targets allow hosts by
// HostNQN and the kernel refuses a HostNQN with another HostID (and the reverse), so the
// pair must be stable for the node's life.
type Identity struct {
	HostNQN string
	HostID  string
}

// UUIDHostNQNPrefix + hostid is the NVMe spec's UUID-based host NQN, as nvme-cli writes it.
const UUIDHostNQNPrefix = "nqn.2014-08.org.nvmexpress:uuid:"

var uuidRe = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)

// LoadOrCreateIdentity returns the identity in hostDir ("hostnqn", "hostid", as the host's
// /etc/nvme). What exists is used, never rewritten; what is missing is made once (mode
// 0644): hostid is the UUID of a UUID-form hostnqn, else a plausible DMI product UUID, else
// random; hostnqn is UUIDHostNQNPrefix+hostid. created says whether a file was written.
// An existing file without a valid value is an error (ErrIdentityConflict): it is the
// administrator's.
func LoadOrCreateIdentity(hostDir, sysfsRoot string) (id Identity, created bool, err error) {
	nqnPath, idPath := filepath.Join(hostDir, "hostnqn"), filepath.Join(hostDir, "hostid")
	nqn, nqnFound, err := readIdentityFile(nqnPath, validHostNQN)
	if err != nil {
		return Identity{}, false, err
	}
	hostID, idFound, err := readIdentityFile(idPath, validHostID)
	if err != nil {
		return Identity{}, false, err
	}
	if nqnFound && idFound {
		return Identity{HostNQN: nqn, HostID: hostID}, false, nil
	}
	if err := os.MkdirAll(hostDir, 0o755); err != nil {
		return Identity{}, false, fmt.Errorf("create the NVMe host identity directory %s: %w (mount the host's /etc/nvme writable into the node plugin)", hostDir, err)
	}
	if !idFound {
		if hostID, err = newHostID(nqn, sysfsRoot); err != nil {
			return Identity{}, false, err
		}
		// The file on disk wins over one another process wrote meanwhile.
		if hostID, err = writeOnce(idPath, hostID, validHostID); err != nil {
			return Identity{}, false, err
		}
	}
	if !nqnFound {
		if nqn, err = writeOnce(nqnPath, UUIDHostNQNPrefix+hostID, validHostNQN); err != nil {
			return Identity{}, false, err
		}
	}
	return Identity{HostNQN: nqn, HostID: hostID}, true, nil
}

func readIdentityFile(path string, valid func(string) error) (string, bool, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("read the NVMe host identity file %s: %w (mount the host's /etc/nvme into the node plugin)", path, err)
	}
	v := strings.TrimSpace(string(b))
	if err := valid(v); err != nil {
		return "", true, fmt.Errorf("%w: %s holds %q: %v; fix the file or remove it so that a new identity is made (targets that allow hosts by NQN must then be updated)", ErrIdentityConflict, path, v, err)
	}
	return v, true, nil
}

func validHostNQN(v string) error {
	if !strings.HasPrefix(v, "nqn.") || !strings.Contains(v, ":") || len(v) >= maxNQNLen {
		return fmt.Errorf("a host NQN starts with \"nqn.\", contains ':' and is under %d bytes", maxNQNLen)
	}
	if bad := badNQNChar(v); bad != "" {
		return fmt.Errorf("a host NQN cannot contain %s", bad)
	}
	return nil
}

func validHostID(v string) error {
	if !uuidRe.MatchString(v) {
		return errors.New("a host ID is a UUID like 4e7f3a52-0a3b-4b5e-9a6c-2f1d8e7c6b5a")
	}
	return nil
}

// newHostID picks a host ID: the UUID of a UUID-form host NQN (as nvme-cli pairs them),
// else the DMI product UUID if plausible, else a random one.
func newHostID(hostNQN, sysfsRoot string) (string, error) {
	if u, ok := strings.CutPrefix(hostNQN, UUIDHostNQNPrefix); ok && uuidRe.MatchString(u) {
		return strings.ToLower(u), nil
	}
	if b, err := os.ReadFile(filepath.Join(sysfsRoot, "class/dmi/id/product_uuid")); err == nil {
		if u := strings.ToLower(strings.TrimSpace(string(b))); plausibleProductUUID(u) {
			return u, nil
		}
	}
	return randomUUID()
}

// plausibleProductUUID rejects firmware placeholders, which would give many machines one identity.
func plausibleProductUUID(u string) bool {
	if !uuidRe.MatchString(u) {
		return false
	}
	digits := strings.ReplaceAll(u, "-", "")
	return strings.Trim(digits, "0") != "" && strings.Trim(digits, "f") != "" &&
		digits != "0123456789abcdef0123456789abcdef" && u != "03000200-0400-0500-0006-000700080009"
}

func randomUUID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("generate a host ID: %w", err)
	}
	b[6] = b[6]&0x0f | 0x40 // version 4
	b[8] = b[8]&0x3f | 0x80 // RFC 4122 variant
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16]), nil
}

// writeOnce creates path with value unless it exists and returns what path then holds:
// a temporary file hard-linked into place, so no reader sees a partial file and a
// concurrent writer's file is never replaced.
func writeOnce(path, value string, valid func(string) error) (string, error) {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return "", fmt.Errorf("write the NVMe host identity file %s: %w (mount the host's /etc/nvme writable into the node plugin)", path, err)
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.WriteString(value + "\n")
	if err == nil {
		err = tmp.Chmod(0o644)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", fmt.Errorf("write the NVMe host identity file %s: %w", path, err)
	}
	if err := os.Link(tmp.Name(), path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			v, _, rerr := readIdentityFile(path, valid)
			return v, rerr
		}
		return "", fmt.Errorf("write the NVMe host identity file %s: %w", path, err)
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		_ = d.Sync() // best effort: make the new name durable before it is used in connects
		d.Close()
	}
	return value, nil
}
