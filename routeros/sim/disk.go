package sim

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

func keySet(keys ...string) map[string]bool {
	m := make(map[string]bool, len(keys))
	for _, k := range keys {
		m[k] = true
	}
	return m
}

var (
	diskSettable = []string{"file-size", "nvme-tcp-export", "nvme-tcp-server-port",
		"nvme-tcp-server-nqn", "nvme-tcp-server-allow-host-name", "comment"}
	diskAddKeys   = keySet(append([]string{"type", "slot", "file-path", "copy-from"}, diskSettable...)...)
	diskSetKeys   = keySet(diskSettable...)
	diskWhereKeys = keySet("type", "slot", "slot-default", "parent", "fs-label", "fs-uuid", "fs",
		"model", "size", "free", "total-inodes", "free-inodes", "use", "mount-point",
		"mount-filesystem", "mount-read-only", "compress", "sector-size", "raid-type",
		"raid-device-count", "raid-max-component-size", "raid-chunk-size", "raid-master", "state",
		"raid-uuid", "nvme-tcp-export", "nvme-tcp-server-port", "nvme-tcp-server-nqn",
		"nvme-tcp-server-allow-host-name", "iscsi-export", "nfs-sharing", "smb-sharing",
		"media-sharing", "media-interface", "swap", "file-path", "file-size", "file-offset", "comment")
)

func (s *Sim) addKeys() map[string]bool {
	if s.version.hasServerNQN() {
		return diskAddKeys
	}
	return without(diskAddKeys, "nvme-tcp-server-nqn")
}

func (s *Sim) setKeys() map[string]bool {
	if s.version.hasServerNQN() {
		return diskSetKeys
	}
	return without(diskSetKeys, "nvme-tcp-server-nqn")
}

func without(m map[string]bool, key string) map[string]bool {
	out := make(map[string]bool, len(m))
	for k := range m {
		if k != key {
			out[k] = true
		}
	}
	return out
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// safeBare are the characters RouterOS prints without quotes in a path-like value.
func bareOrQuoted(v string) propStyle {
	if v == "" {
		return styleQuoted
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("/._-+:@", c) >= 0) {
			return styleQuoted
		}
	}
	return styleBare
}

func diskRef(id int) string { return fmt.Sprintf("*%X", id) }

// diskItems lists the /disk menu as RouterOS numbers it: the pools, then the file disks
// in creation order. Without usage the pools' free, free-inodes and use are not measured
// (walking a pool costs a stat per file): for lookups that do not filter on them.
func (s *Sim) diskItems(usage bool) []*item {
	items := make([]*item, 0, len(s.pools)+len(s.disks))
	for i, p := range s.pools {
		items = append(items, s.poolItem(len(items), diskRef(i+1), p, usage))
	}
	for _, d := range s.disks {
		items = append(items, s.diskItem(len(items), d))
	}
	return items
}

// poolItem prints a pool like the reference's raid10 sample; size, free, use and the inode
// counts come from the pool's real directory.
func (s *Sim) poolItem(index int, ref string, p *Pool, usage bool) *item {
	var used, entries int64
	if usage {
		used, entries = s.poolUsage(p)
	}
	free := max(p.Size-used, 0)
	use := int64(math.Round(float64(used) * 100 / float64(p.Size)))
	itoa := func(n int64) string { return strconv.FormatInt(n, 10) }
	return &item{index: index, ref: ref, flags: "BM", props: []prop{
		{"type", "raid", styleBare},
		{"slot", p.Name, styleQuoted},
		{"slot-default", "", styleQuoted},
		{"parent", "", styleQuoted},
		{"fs-label", p.FSLabel, styleQuoted},
		{"fs-uuid", p.FSUUID, styleQuoted},
		{"fs", p.FS, styleBare},
		{"model", p.Model, styleQuoted},
		{"size", itoa(p.Size), styleGrouped},
		{"free", itoa(free), styleGrouped},
		{"total-inodes", itoa(p.TotalInodes), styleGrouped},
		{"free-inodes", itoa(max(p.TotalInodes-entries, 0)), styleGrouped},
		{"use", itoa(use) + "%", styleBare},
		{"mount-point", p.Name, styleQuoted},
		{"mount-filesystem", "yes", styleBare},
		{"mount-read-only", "no", styleBare},
		{"compress", "no", styleBare},
		{"sector-size", "512", styleBare},
		{"raid-type", strconv.Itoa(p.RAIDType), styleBare},
		{"raid-device-count", strconv.Itoa(p.RAIDDevices), styleBare},
		{"raid-max-component-size", "none", styleBare},
		{"raid-chunk-size", "256K", styleBare},
		{"raid-master", "none", styleBare},
		{"state", "clean", styleQuoted},
		{"raid-uuid", p.RAIDUUID, styleQuoted},
		{"nvme-tcp-export", "no", styleBare},
		{"iscsi-export", "no", styleBare},
		{"nfs-sharing", "no", styleBare},
		{"smb-sharing", "no", styleBare},
		{"media-sharing", "no", styleBare},
		{"media-interface", "none", styleBare},
		{"swap", "no", styleBare},
	}}
}

// diskItem prints a file disk like the reference's vm-storage-001 sample (RouterOS 7.24.4).
// The nvme-tcp-server-* keys appear only while exported, and -nqn only from 7.21.
func (s *Sim) diskItem(index int, d *disk) *item {
	flags := "B"
	if d.export {
		flags += "t"
	}
	props := []prop{
		{"type", "file", styleBare},
		{"slot", d.slot, styleQuoted},
		{"slot-default", "", styleQuoted},
		{"parent", "", styleQuoted},
		{"fs", "-", styleBare},
		{"model", d.path, styleQuoted},
		{"size", strconv.FormatInt(d.size, 10), styleGrouped},
		{"mount-filesystem", "no", styleBare},
		{"mount-read-only", "no", styleBare},
		{"compress", "no", styleBare},
		{"sector-size", "512", styleBare},
		{"raid-master", "none", styleBare},
		{"nvme-tcp-export", yesNo(d.export), styleBare},
	}
	if d.export {
		props = append(props, prop{"nvme-tcp-server-port", strconv.Itoa(d.port), styleBare})
		if s.version.hasServerNQN() {
			props = append(props, prop{"nvme-tcp-server-nqn", d.nqn, styleQuoted})
		}
		props = append(props, prop{"nvme-tcp-server-allow-host-name", d.allow, styleQuoted})
	}
	props = append(props,
		prop{"iscsi-export", "no", styleBare},
		prop{"nfs-sharing", "no", styleBare},
		prop{"smb-sharing", "no", styleBare},
		prop{"media-sharing", "no", styleBare},
		prop{"media-interface", "none", styleBare},
		prop{"swap", "no", styleBare},
		prop{"file-path", d.path, bareOrQuoted(d.path)},
		prop{"file-size", humanSize(d.size), styleBare},
		prop{"file-offset", "0", styleBare},
	)
	return &item{index: index, ref: diskRef(d.id), flags: flags, comment: d.comment, props: props}
}

func (s *Sim) diskPrint(env *execEnv, c *command) (result, error) {
	w, err := printArgs(env, c.args)
	if err != nil {
		return result{}, err
	}
	e, err := parseWhere(env.line, w, diskWhereKeys, commandEnd(env, c))
	if err != nil {
		return result{}, err
	}
	items := filterItems(s.diskItems(filtersOnUsage(w)), e)
	for i, it := range items {
		if p := s.poolByRef(it.ref); p != nil { // measure the pool for printing
			items[i] = s.poolItem(it.index, it.ref, p, true)
		}
	}
	return result{out: detailPrinter{flags: diskFlags, width: env.width}.print(items)}, nil
}

func (s *Sim) diskFind(env *execEnv, c *command) (result, error) {
	e, err := parseWhere(env.line, findArgs(c.args), diskWhereKeys, commandEnd(env, c))
	if err != nil {
		return result{}, err
	}
	return refsOf(filterItems(s.diskItems(filtersOnUsage(c.args)), e)), nil
}

// filtersOnUsage reports whether a where-expression reads the measured pool properties.
func filtersOnUsage(els []element) bool {
	for _, el := range els {
		if el.kind == elNamed && (el.key == "free" || el.key == "free-inodes" || el.key == "use") {
			return true
		}
	}
	return false
}

// poolByRef finds a pool by its item reference; pools are items *1 to *N.
func (s *Sim) poolByRef(ref string) *Pool {
	for n, p := range s.pools {
		if diskRef(n+1) == ref {
			return p
		}
	}
	return nil
}

func (s *Sim) diskByRef(ref string) *disk {
	for _, d := range s.disks {
		if diskRef(d.id) == ref {
			return d
		}
	}
	return nil
}

// targetDisks resolves set/remove's first argument to file disks.
func (s *Sim) targetDisks(env *execEnv, c *command) ([]*disk, error) {
	if len(c.args) == 0 || c.args[0].kind == elNamed {
		return nil, errNoSuchItem
	}
	items, err := s.itemRefs(env, c.args[0], s.diskItems(false), "slot")
	if err != nil {
		return nil, err
	}
	var out []*disk
	for _, it := range items {
		d := s.diskByRef(it.ref)
		if d == nil {
			name, _ := it.get("slot")
			return nil, failure("disk %q is a RAID pool: the simulator only changes file disks", name)
		}
		out = append(out, d)
	}
	return out, nil
}

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

func (s *Sim) diskSet(env *execEnv, c *command) (result, error) {
	targets, err := s.targetDisks(env, c)
	if err != nil {
		return result{}, err
	}
	args, err := namedArgs(env, c.args[1:], s.setKeys())
	if err != nil {
		return result{}, err
	}
	for _, d := range targets {
		if err := s.updateDisk(d, args); err != nil {
			return result{}, err
		}
	}
	return result{}, nil
}

// updateDisk applies `set` to one disk: grow its file (never shrink), re-export when the
// export settings change, re-apply the host allow-list.
func (s *Sim) updateDisk(d *disk, args map[string]element) error {
	nd := *d
	if el, ok := args["file-size"]; ok {
		n, err := parseSize(el.val)
		if err != nil {
			return invalidValue("file-size")
		}
		nd.size = n
	}
	if err := s.applySettings(&nd, args); err != nil {
		return err
	}
	if nd.size < d.size {
		return failure("file-size can not be decreased (%s to %s)", humanSize(d.size), humanSize(nd.size))
	}
	if err := s.checkNQN(&nd, d); err != nil {
		return err
	}
	grown := nd.size > d.size
	if grown {
		pool, err := s.poolOfPath(d.path)
		if err != nil {
			return err
		}
		if err := s.reserve(pool, nd.size-d.size); err != nil {
			return err
		}
		if err := os.Truncate(s.HostPath(d.path), nd.size); err != nil {
			return failure("grow file %q: %v", d.path, err)
		}
	}
	wasExported := d.export
	reexport := wasExported && (!nd.export || s.nqnOf(&nd) != s.nqnOf(d) || nd.port != d.port)
	if reexport {
		if err := s.unexport(d); err != nil {
			return failure("unexport %q: %v", d.slot, err)
		}
	}
	*d = nd
	switch {
	case !d.export:
	case !wasExported || reexport:
		if err := s.export(d); err != nil {
			d.export = false
			return failure("export %q: %v", d.slot, err)
		}
	default:
		if grown {
			if err := s.resizeExport(d); err != nil {
				return failure("resize export %q: %v", d.slot, err)
			}
		}
		if _, ok := args["nvme-tcp-server-allow-host-name"]; ok {
			if err := s.setExportHosts(d); err != nil {
				return failure("set allowed hosts of %q: %v", d.slot, err)
			}
		}
	}
	return nil
}

func (s *Sim) diskRemove(env *execEnv, c *command) (result, error) {
	targets, err := s.targetDisks(env, c)
	if err != nil {
		return result{}, err
	}
	if len(c.args) > 1 {
		return result{}, expectedEnd(env.line, c.args[1].pos)
	}
	for _, d := range targets {
		if d.export {
			if err := s.unexport(d); err != nil {
				return result{}, failure("unexport %q: %v", d.slot, err)
			}
		}
		for i, o := range s.disks {
			if o == d {
				s.disks = append(s.disks[:i], s.disks[i+1:]...)
				break
			}
		}
	}
	return result{}, nil
}

// parseSize reads RouterOS sizes: bytes, or an integer with a binary unit K, M, G, T, P
// (1G = 1 073 741 824 bytes).
func parseSize(v value) (int64, error) {
	if v.sub != nil || v.text == "" {
		return 0, errors.New("empty size")
	}
	t := v.text
	mult := int64(1)
	if i := strings.IndexAny(t, "KMGTPkmgtp"); i >= 0 {
		unit := strings.ToUpper(t[i:])
		unit = strings.TrimSuffix(strings.TrimSuffix(unit, "B"), "I")
		shift := strings.Index("KMGTP", unit)
		if len(unit) != 1 || shift < 0 {
			return 0, fmt.Errorf("bad unit in %q", v.text)
		}
		mult = 1 << (10 * (shift + 1))
		t = t[:i]
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n <= 0 || n > math.MaxInt64/mult {
		return 0, fmt.Errorf("bad size %q", v.text)
	}
	return n * mult, nil
}

// ParseSize reads a size the way /disk add's file-size does: bytes or an integer with a
// binary unit (1536M, 2G, 1T).
func ParseSize(s string) (int64, error) {
	return parseSize(value{text: s})
}
