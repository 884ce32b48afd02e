package sim

import "os"

// diskSet is `/disk set <items> key=value…`; [find …] matching nothing changes nothing.
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

// diskRemove is `/disk remove <items>`: the items go, their backing files stay.
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
