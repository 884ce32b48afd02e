package sim

import (
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
)

var fileWhereKeys = keySet("name", "type", "size", "last-modified")

// poolOfPath checks a RouterOS file path (/pool/dir/x, the leading slash optional) and
// returns the pool it lives on.
func (s *Sim) poolOfPath(p string) (*Pool, error) {
	rel := strings.TrimPrefix(p, "/")
	if rel == "" || path.Clean(rel) != rel || strings.HasPrefix(rel, "../") || rel == ".." {
		return nil, failure("invalid file path %q", p)
	}
	first, rest, _ := strings.Cut(rel, "/")
	for _, pool := range s.pools {
		if pool.Name == first && rest != "" {
			return pool, nil
		}
	}
	return nil, failure("file path %q is not on a mounted disk", p)
}

// poolUsage sums the sizes of the files in a pool (apparent sizes: a sparse file counts
// whole, as its space is promised) plus what running copies will still write, and counts
// the pool's directory entries including its root (the used inodes).
func (s *Sim) poolUsage(p *Pool) (used, entries int64) {
	root := filepath.Join(s.opts.Dir, p.Name)
	_ = filepath.WalkDir(root, func(_ string, de fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		entries++
		if de.Type().IsRegular() {
			if info, err := de.Info(); err == nil {
				used += info.Size()
			}
		}
		return nil
	})
	for host, j := range s.copies {
		if j.running() && j.pool == p {
			if st, err := os.Stat(host); err == nil {
				used += max(j.total-st.Size(), 0)
			}
		}
	}
	return used, entries
}

// reserve fails with RouterOS's "not enough space" unless need more bytes fit in the pool.
func (s *Sim) reserve(p *Pool, need int64) error {
	if need <= 0 {
		return nil
	}
	if s.faults.isDiskFull() {
		return failure("not enough space")
	}
	if used, _ := s.poolUsage(p); need > p.Size-used {
		return failure("not enough space")
	}
	return nil
}

// fileItems lists /file the way RouterOS does: names relative to the root without a
// leading slash, directories before their contents, pools' mount points as type=disk.
// Top-level dot entries are the simulator's own (exports links) and stay hidden.
func (s *Sim) fileItems() []*item {
	var items []*item
	root := s.opts.Dir
	_ = filepath.WalkDir(root, func(p string, de fs.DirEntry, err error) error {
		if err != nil || p == root {
			return nil
		}
		rel, _ := filepath.Rel(root, p)
		rel = filepath.ToSlash(rel)
		if !strings.Contains(rel, "/") && strings.HasPrefix(rel, ".") {
			if de.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		info, err := de.Info()
		if err != nil {
			return nil
		}
		it := &item{index: len(items), ref: rel}
		it.props = append(it.props, prop{"name", rel, bareOrQuoted(rel)})
		switch {
		case de.IsDir() && s.isPoolName(rel):
			it.props = append(it.props, prop{"type", "disk", styleBare})
		case de.IsDir():
			it.props = append(it.props, prop{"type", "directory", styleBare})
		case de.Type().IsRegular():
			it.props = append(it.props,
				prop{"type", fileType(rel), styleBare},
				prop{"size", humanSize(info.Size()), styleBare})
		default:
			return nil
		}
		it.props = append(it.props, prop{"last-modified",
			info.ModTime().In(s.opts.Location).Format("2006-01-02 15:04:05"), styleBare})
		items = append(items, it)
		return nil
	})
	return items
}

func (s *Sim) isPoolName(name string) bool {
	for _, p := range s.pools {
		if p.Name == name {
			return true
		}
	}
	return false
}

// fileType is RouterOS's type column: the extension and "file" (".img file").
func fileType(name string) string {
	base := path.Base(name)
	if i := strings.LastIndexByte(base, '.'); i > 0 {
		return base[i:] + " file"
	}
	return "file"
}

func (s *Sim) filePrint(env *execEnv, c *command) (result, error) {
	w, err := printArgs(env, c.args)
	if err != nil {
		return result{}, err
	}
	e, err := parseWhere(env.line, w, fileWhereKeys, commandEnd(env, c))
	if err != nil {
		return result{}, err
	}
	items := filterItems(s.fileItems(), e)
	return result{out: detailPrinter{width: env.width}.print(items)}, nil
}

func (s *Sim) fileFind(env *execEnv, c *command) (result, error) {
	e, err := parseWhere(env.line, findArgs(c.args), fileWhereKeys, commandEnd(env, c))
	if err != nil {
		return result{}, err
	}
	return refsOf(filterItems(s.fileItems(), e)), nil
}

// fileRemove deletes files and empty directories, never recursively. A file still used by
// a disk is refused (remove the disk first), and a copy still writing it is stopped.
func (s *Sim) fileRemove(env *execEnv, c *command) (result, error) {
	if len(c.args) == 0 || c.args[0].kind == elNamed {
		return result{}, errNoSuchItem
	}
	if len(c.args) > 1 {
		return result{}, expectedEnd(env.line, c.args[1].pos)
	}
	items, err := s.itemRefs(env, c.args[0], s.fileItems(), "name")
	if err != nil {
		return result{}, err
	}
	for _, it := range items {
		name := it.ref
		if s.isPoolName(name) {
			return result{}, failure("%q is a disk, not a file", name)
		}
		for _, d := range s.disks {
			if strings.TrimPrefix(d.path, "/") == name {
				return result{}, failure("file %q is used by disk %q", name, d.slot)
			}
		}
		host := s.HostPath(name)
		if j := s.copies[host]; j != nil {
			j.cancel()
			<-j.done
			delete(s.copies, host)
		}
		if err := os.Remove(host); err != nil && !os.IsNotExist(err) {
			if st, serr := os.Stat(host); serr == nil && st.IsDir() {
				return result{}, failure("directory %q is not empty", name)
			}
			return result{}, failure("remove %q: %v", name, err)
		}
	}
	return result{}, nil
}
