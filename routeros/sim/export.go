package sim

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// exportSpec is what an NVMe/TCP export of one disk needs.
type exportSpec struct {
	nqn   string
	file  string   // absolute backing file
	addrs []string // where the RDS listens: one port per address
	port  int
	hosts []string // allowed host NQNs; empty allows any host
}

// exporter makes a disk reachable the way the node side attaches it: the exports directory
// of symlinks (the loop-device stand-in) and, optionally, the kernel NVMe target.
type exporter interface {
	export(e exportSpec) error
	unexport(e exportSpec) error
	resize(e exportSpec) error
	setHosts(e exportSpec) error
}

func (s *Sim) spec(d *disk) exportSpec {
	var hosts []string
	for _, h := range strings.Split(d.allow, ",") {
		if h = strings.TrimSpace(h); h != "" {
			hosts = append(hosts, h)
		}
	}
	return exportSpec{nqn: s.nqnOf(d), file: s.HostPath(d.path), addrs: strings.Split(s.opts.NVMeAddress, ","), port: d.port, hosts: hosts}
}

// export runs every exporter; if one fails, the ones before it are undone.
func (s *Sim) export(d *disk) error {
	e := s.spec(d)
	for i, x := range s.exporters {
		if err := x.export(e); err != nil {
			for _, y := range s.exporters[:i] {
				_ = y.unexport(e)
			}
			return err
		}
	}
	return nil
}

func (s *Sim) unexport(d *disk) error {
	e := s.spec(d)
	var errs []error
	for _, x := range s.exporters {
		errs = append(errs, x.unexport(e))
	}
	return errors.Join(errs...)
}

func (s *Sim) resizeExport(d *disk) error {
	return s.eachExporter(d, exporter.resize)
}

func (s *Sim) setExportHosts(d *disk) error {
	return s.eachExporter(d, exporter.setHosts)
}

func (s *Sim) eachExporter(d *disk, op func(exporter, exportSpec) error) error {
	e := s.spec(d)
	for _, x := range s.exporters {
		if err := op(x, e); err != nil {
			return err
		}
	}
	return nil
}

// validNQNName keeps an NQN usable as one path component (a symlink or configfs name).
func validNQNName(nqn string) error {
	if nqn == "" || nqn == "." || nqn == ".." || strings.ContainsAny(nqn, "/\x00") || len(nqn) > 223 {
		return fmt.Errorf("NQN %q can not name a subsystem", nqn)
	}
	return nil
}

// linkExporter keeps Dir/.nvme-exports/<nqn> → backing file for every exported disk.
type linkExporter struct{ dir string }

func newLinkExporter(dir string) (*linkExporter, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("sim: create exports directory: %w", err)
	}
	return &linkExporter{dir: dir}, nil
}

func (l *linkExporter) export(e exportSpec) error {
	if err := validNQNName(e.nqn); err != nil {
		return err
	}
	link := filepath.Join(l.dir, e.nqn)
	if target, err := os.Readlink(link); err == nil {
		if target == e.file {
			return nil
		}
		if err := os.Remove(link); err != nil {
			return err
		}
	}
	return os.Symlink(e.file, link)
}

func (l *linkExporter) unexport(e exportSpec) error {
	if validNQNName(e.nqn) != nil {
		return nil
	}
	err := os.Remove(filepath.Join(l.dir, e.nqn))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}

func (l *linkExporter) resize(exportSpec) error   { return nil }
func (l *linkExporter) setHosts(exportSpec) error { return nil }
