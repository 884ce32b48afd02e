package sim

import (
	"fmt"
	"math"
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
