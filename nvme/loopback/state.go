package loopback

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"srvlab.io/rds-csi/internal/loopdev"
	"srvlab.io/rds-csi/nvme"
)

// attachment is one attached volume, as recorded in the state file.
type attachment struct {
	NQN         string `json:"nqn"`
	NSID        int    `json:"nsid"`
	File        string `json:"file"`
	Address     string `json:"address"`
	Port        int    `json:"port"`
	CtrlLossTmo int    `json:"ctrlLossTmo"`
	Device      string `json:"device"`
	Major       uint32 `json:"major"`
	Minor       uint32 `json:"minor"`

	dev       loopdev.Device // carries the backing file's identity for a safe Detach
	lostSince time.Time      // when the export was first seen missing; zero while it exists
}

// findDevice returns the recorded loop device if it is still attached to the recorded
// file: device names are reused, so the name alone proves nothing. The device this
// process attached (or found before) is checked through its own sysfs entries only;
// every loop device is read (loopdev.Find) only when that check fails.
func (a *attachment) findDevice() (loopdev.Device, bool) {
	if a.dev.Path != "" && a.dev.Path == a.Device && a.dev.Major == a.Major && a.dev.Minor == a.Minor && loopdev.Backs(a.dev, a.File) {
		return a.dev, true
	}
	devs, err := loopdev.Find(a.File)
	if err != nil {
		return loopdev.Device{}, false
	}
	for _, d := range devs {
		if d.Path == a.Device && d.Major == a.Major && d.Minor == a.Minor {
			return d, true
		}
	}
	return loopdev.Device{}, false
}

func (a *attachment) controller(live bool) nvme.Controller {
	state := "live"
	if !live {
		state = "connecting"
	}
	return nvme.Controller{
		Name: "loop-" + strings.TrimPrefix(filepath.Base(a.Device), "loop"), State: state, Transport: "loop",
		Address: fmt.Sprintf("traddr=%s,trsvcid=%d", a.Address, a.Port), TrAddr: a.Address, TrSvcID: a.Port,
	}
}

// disk is the attachment's disk; when its size cannot be read it is returned too, with
// size 0 and an error wrapping nvme.ErrNoDisk.
func (a *attachment) disk() (*nvme.Disk, error) {
	size, err := sysfsSize(a.Device)
	d := &nvme.Disk{
		Name: filepath.Base(a.Device), DevPath: a.Device, Major: a.Major, Minor: a.Minor,
		SizeBytes: size, NSID: a.NSID, NQN: a.NQN,
		Controllers: []nvme.Controller{a.controller(a.lostSince.IsZero())},
	}
	if err != nil {
		return d, fmt.Errorf("%w: %s: %v", nvme.ErrNoDisk, a.Device, err)
	}
	return d, nil
}

func loadState(path string) (map[string]*attachment, error) {
	raw, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return map[string]*attachment{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("loopback: read state: %w", err)
	}
	recs := map[string]*attachment{}
	if err := json.Unmarshal(raw, &recs); err != nil {
		return nil, fmt.Errorf("loopback: state file %s is corrupt: %w (remove it; attachments are then found again by the sweep)", path, err)
	}
	return recs, nil
}

// saveLocked writes the records atomically (temporary file, fsync, rename); the caller
// holds h.mu.
func (h *Host) saveLocked() error {
	raw, err := json.MarshalIndent(h.recs, "", "  ")
	if err != nil {
		return err
	}
	dir := filepath.Dir(h.cfg.StateFile)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("loopback: state directory: %w", err)
	}
	tmp, err := os.CreateTemp(dir, ".loopback-*.tmp")
	if err != nil {
		return fmt.Errorf("loopback: write state: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(raw); err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), h.cfg.StateFile)
	}
	if err != nil {
		return fmt.Errorf("loopback: write state: %w", err)
	}
	return nil
}
