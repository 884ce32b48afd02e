package sim

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// StateFileName is where, under Options.Dir, the disk table is kept so that a simulator
// started again on the same directory comes back with its disks, as an RDS does after a
// reboot. Top-level dot entries are hidden from /file print.
const StateFileName = ".rds-sim-disks.json"

type savedDisk struct {
	ID      int    `json:"id"`
	Slot    string `json:"slot"`
	Path    string `json:"file-path"`
	Size    int64  `json:"size"`
	Export  bool   `json:"nvme-tcp-export"`
	Port    int    `json:"nvme-tcp-server-port"`
	NQN     string `json:"nvme-tcp-server-nqn,omitempty"`
	Allow   string `json:"nvme-tcp-server-allow-host-name,omitempty"`
	Comment string `json:"comment,omitempty"`
}

type savedState struct {
	NextID int         `json:"next-id"`
	Disks  []savedDisk `json:"disks"`
}

// diskChanging are the commands after which the disk table is saved.
var diskChanging = map[string]bool{"disk add": true, "disk set": true, "disk remove": true}

// save writes the disk table atomically (called with the state lock held).
func (s *Sim) save() error {
	st := savedState{NextID: s.nextID, Disks: []savedDisk{}}
	for _, d := range s.disks {
		st.Disks = append(st.Disks, savedDisk{ID: d.id, Slot: d.slot, Path: d.path, Size: d.size,
			Export: d.export, Port: d.port, NQN: d.nqn, Allow: d.allow, Comment: d.comment})
	}
	data, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	path := filepath.Join(s.opts.Dir, StateFileName)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return fmt.Errorf("save disk table: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("save disk table: %w", err)
	}
	return nil
}

// load reads a saved disk table and exports its exported disks again. Exports a previous
// run left behind (it crashed, or nothing closed it) are the same disks' and are replaced.
func (s *Sim) load() error {
	data, err := os.ReadFile(filepath.Join(s.opts.Dir, StateFileName))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("sim: read disk table: %w", err)
	}
	var st savedState
	if err := json.Unmarshal(data, &st); err != nil {
		return fmt.Errorf("sim: %s is damaged (%v): remove it to start with no disks", StateFileName, err)
	}
	s.nextID = st.NextID
	for _, sd := range st.Disks {
		d := &disk{id: sd.ID, slot: sd.Slot, path: sd.Path, size: sd.Size, export: sd.Export,
			port: sd.Port, nqn: sd.NQN, allow: sd.Allow, comment: sd.Comment}
		if d.export {
			_ = s.unexport(d)
			if err := s.export(d); err != nil {
				return fmt.Errorf("sim: export saved disk %q again: %w", d.slot, err)
			}
		}
		s.disks = append(s.disks, d)
	}
	return nil
}
