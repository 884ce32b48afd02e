package sim

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
)

// diskAdd creates a file disk. copy-from= copies the other item's SETTINGS, as RouterOS's
// generic argument documents, never its data: the new disk's file starts empty. (An earlier
// driver's snapshot design relied on it copying data; a regression to that must fail.)
func (s *Sim) diskAdd(env *execEnv, c *command) (result, error) {
	args, err := namedArgs(env, c.args, s.addKeys())
	if err != nil {
		return result{}, err
	}
	d := &disk{port: 4420}
	sizeSet, typeSet := false, false
	if el, ok := args["copy-from"]; ok {
		items, err := s.itemRefs(env, refElement(el), s.diskItems(false), "slot")
		if err != nil {
			return result{}, err
		}
		if len(items) == 0 {
			return result{}, errNoSuchItem
		}
		src := s.diskByRef(items[0].ref)
		if src == nil {
			return result{}, failure("can not copy a RAID pool")
		}
		*d = *src
		sizeSet, typeSet = true, true
	}
	if el, ok := args["type"]; ok {
		if el.val.sub != nil || el.val.text != "file" {
			return result{}, noMatchingValue("type")
		}
		typeSet = true
	}
	for _, k := range []string{"slot", "file-path"} {
		if el, ok := args[k]; ok {
			if el.val.sub != nil {
				return result{}, invalidValue(k)
			}
			if k == "slot" {
				d.slot = el.val.text
			} else {
				d.path = el.val.text
			}
		}
	}
	if el, ok := args["file-size"]; ok {
		n, err := parseSize(el.val)
		if err != nil {
			return result{}, invalidValue("file-size")
		}
		d.size, sizeSet = n, true
	}
	if err := s.applySettings(d, args); err != nil {
		return result{}, err
	}
	switch {
	case !typeSet:
		return result{}, failure("type not set: give type=file")
	case d.slot == "":
		return result{}, failure("slot not set")
	case d.path == "":
		return result{}, failure("file-path not set")
	}
	if s.slotTaken(d.slot) {
		return result{}, failure("disk with slot %q already exists", d.slot)
	}
	pool, err := s.poolOfPath(d.path)
	if err != nil {
		return result{}, err
	}
	for _, o := range s.disks {
		if o.path == d.path {
			return result{}, failure("file %q is already used by disk %q", d.path, o.slot)
		}
	}
	if err := s.checkNQN(d, nil); err != nil {
		return result{}, err
	}
	created, err := s.prepareFile(pool, d, sizeSet)
	if err != nil {
		return result{}, err
	}
	d.id = s.nextDiskID()
	if d.export {
		if err := s.export(d); err != nil {
			if created {
				_ = os.Remove(s.HostPath(d.path))
			}
			return result{}, failure("export %q: %v", d.slot, err)
		}
	}
	s.disks = append(s.disks, d)
	return result{ret: diskRef(d.id)}, nil
}

// refElement turns copy-from's value into the element itemRefs resolves.
func refElement(el element) element {
	kind := elWord
	switch {
	case el.val.sub != nil:
		kind = elSub
	case el.val.quoted:
		kind = elString
	}
	return element{kind: kind, val: el.val, pos: el.val.pos}
}

func (s *Sim) nextDiskID() int {
	if s.nextID <= len(s.pools) {
		s.nextID = len(s.pools) + 1
	}
	id := s.nextID
	s.nextID++
	return id
}

func (s *Sim) slotTaken(slot string) bool {
	for _, p := range s.pools {
		if p.Name == slot {
			return true
		}
	}
	for _, d := range s.disks {
		if d.slot == slot {
			return true
		}
	}
	return false
}

// applySettings applies the keys add and set share.
func (s *Sim) applySettings(d *disk, args map[string]element) error {
	for _, k := range []string{"nvme-tcp-server-nqn", "nvme-tcp-server-allow-host-name", "comment"} {
		el, ok := args[k]
		if !ok {
			continue
		}
		if el.val.sub != nil {
			return invalidValue(k)
		}
		switch k {
		case "nvme-tcp-server-nqn":
			d.nqn = el.val.text
		case "nvme-tcp-server-allow-host-name":
			d.allow = el.val.text
		default:
			d.comment = el.val.text
		}
	}
	if el, ok := args["nvme-tcp-export"]; ok {
		switch el.val.text {
		case "yes", "true":
			d.export = true
		case "no", "false":
			d.export = false
		default:
			return noMatchingValue("nvme-tcp-export")
		}
	}
	if el, ok := args["nvme-tcp-server-port"]; ok {
		n, err := strconv.Atoi(el.val.text)
		if err != nil || n < 1 || n > 65535 || el.val.sub != nil {
			return invalidValue("nvme-tcp-server-port")
		}
		d.port = n
	}
	return nil
}

// nqnOf is the subsystem NQN a disk is exported as: its nvme-tcp-server-nqn when set (7.21+),
// otherwise its slot.
func (s *Sim) nqnOf(d *disk) string {
	if d.nqn != "" && s.version.hasServerNQN() {
		return d.nqn
	}
	return d.slot
}

func (s *Sim) checkNQN(d, self *disk) error {
	if !d.export {
		return nil
	}
	nqn := s.nqnOf(d)
	for _, o := range s.disks {
		if o != self && o.export && s.nqnOf(o) == nqn {
			return failure("nvme-tcp-server-nqn %q is already used by disk %q", nqn, o.slot)
		}
	}
	return nil
}

// prepareFile creates the backing file (sparse, exactly d.size bytes) or attaches an
// existing one, growing it when file-size asks for more. It reports whether it created it.
func (s *Sim) prepareFile(pool *Pool, d *disk, sizeSet bool) (bool, error) {
	host := s.HostPath(d.path)
	st, err := os.Stat(host)
	switch {
	case err == nil:
		if !st.Mode().IsRegular() {
			return false, failure("file-path %q is not a file", d.path)
		}
		if !sizeSet {
			d.size = st.Size()
			return false, nil
		}
		if d.size < st.Size() {
			return false, failure("file-size %s is smaller than file %q", humanSize(d.size), d.path)
		}
		if err := s.reserve(pool, d.size-st.Size()); err != nil {
			return false, err
		}
		if err := os.Truncate(host, d.size); err != nil {
			return false, failure("grow file %q: %v", d.path, err)
		}
		return false, nil
	case errors.Is(err, os.ErrNotExist):
		if !sizeSet {
			return false, failure("file %q does not exist: give file-size to create it", d.path)
		}
		if err := s.reserve(pool, d.size); err != nil {
			return false, err
		}
		if err := createSparse(host, d.size); err != nil {
			return false, failure("create file %q: %v", d.path, err)
		}
		return true, nil
	default:
		return false, failure("file %q: %v", d.path, err)
	}
}

func createSparse(host string, size int64) error {
	if err := os.MkdirAll(filepath.Dir(host), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(host, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	if err := f.Truncate(size); err != nil {
		f.Close()
		os.Remove(host)
		return err
	}
	return f.Close()
}
