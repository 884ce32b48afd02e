package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"srvlab.io/rds-csi/nvme"
)

// The proof that this driver made a connection. A managed NQN prefix only says a
// subsystem could be a volume of ours: the earlier RDS driver's volumes, or ours after the
// state directory was lost, carry the same prefix, and disconnecting them cuts a running
// workload's disk. So every connect writes an intent record (fsynced) *before* its write to
// /dev/nvme-fabrics, and the record goes only after a verified disconnect. Outside
// NodeUnstageVolume nothing is disconnected without such a record of this kernel boot.

// connectionIntentVersion is bumped when the record's meaning changes incompatibly; a
// record of another version proves nothing.
const connectionIntentVersion = 1

// connectionIntent is <StateDir>/connections/<sha256 of the NQN>.json.
type connectionIntent struct {
	Version int    `json:"version"`
	NQN     string `json:"nqn"`
	Address string `json:"address"`
	Port    int    `json:"port"`
	// BootID is the kernel boot of the connect: a record of an earlier boot describes a
	// connection that no longer exists, whoever made the one there now.
	BootID string `json:"bootId"`
	// Adopted: the subsystem was already connected (by someone else, or by this driver
	// before its records were lost) when this driver connected to it. Such a connection
	// is not proven to be ours until kubelet stages it, and the staging record claims it.
	Adopted bool      `json:"adopted,omitempty"`
	At      time.Time `json:"at"`
}

// connectionLedger keeps the intent records.
type connectionLedger struct {
	dir    string
	bootID string
	mu     sync.Mutex
}

func openConnectionLedger(stateDir, bootID string) (*connectionLedger, error) {
	dir := filepath.Join(stateDir, "connections")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create the node's connection records directory %s: %w (set --state-dir to a writable host directory)", dir, err)
	}
	return &connectionLedger{dir: dir, bootID: bootID}, nil
}

func (l *connectionLedger) path(nqn string) string {
	sum := sha256.Sum256([]byte(nqn))
	return filepath.Join(l.dir, hex.EncodeToString(sum[:16])+".json")
}

// get returns the intent record of nqn; ok is false when there is none or it is
// unreadable, of another version or another NQN (it then proves nothing).
func (l *connectionLedger) get(nqn string) (connectionIntent, bool) {
	raw, err := os.ReadFile(l.path(nqn))
	if err != nil {
		return connectionIntent{}, false
	}
	var in connectionIntent
	if json.Unmarshal(raw, &in) != nil || in.Version != connectionIntentVersion || in.NQN != nqn {
		return connectionIntent{}, false
	}
	return in, true
}

// proves reports whether this driver made the current connection of nqn: a record of
// this boot, made by a connect that found nothing connected.
func (l *connectionLedger) proves(nqn string) bool {
	in, ok := l.get(nqn)
	return ok && in.BootID == l.bootID && !in.Adopted
}

// intend records, durably, that this driver is about to connect t. connected says the
// subsystem is already connected (or that this could not be read); the record then
// marks the connection adopted, unless this boot's record already proves it ours.
func (l *connectionLedger) intend(t nvme.Target, connected bool) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	in := connectionIntent{Version: connectionIntentVersion, NQN: t.NQN, Address: t.Address, Port: t.Port, BootID: l.bootID, At: time.Now().UTC()}
	if connected {
		in.Adopted = !l.proves(t.NQN)
	}
	raw, err := json.MarshalIndent(in, "", "  ")
	if err != nil {
		return err
	}
	if err := writeFileAtomic(l.path(t.NQN), raw); err != nil {
		return fmt.Errorf("record the intent to connect %s before connecting: %w", t.NQN, err)
	}
	return nil
}

// forget removes nqn's record once its disconnect was verified.
func (l *connectionLedger) forget(nqn string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := os.Remove(l.path(nqn)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove the connection record of %s: %w", nqn, err)
	}
	return syncDir(l.dir)
}

// owned returns the NQNs this ledger proves ours, and removes records whose subsystem is
// gone (a crash after the disconnect, or before the connect wrote anything): they
// describe nothing. connected holds the NQNs the kernel has now.
func (l *connectionLedger) owned(connected map[string]bool) (map[string]bool, error) {
	entries, err := os.ReadDir(l.dir)
	if err != nil {
		return nil, fmt.Errorf("read the node's connection records %s: %w", l.dir, err)
	}
	owned := map[string]bool{}
	for _, e := range entries {
		name := e.Name()
		if !strings.HasSuffix(name, ".json") || strings.HasPrefix(name, ".") {
			continue
		}
		raw, err := os.ReadFile(filepath.Join(l.dir, name))
		if err != nil {
			continue
		}
		var in connectionIntent
		if json.Unmarshal(raw, &in) != nil || in.Version != connectionIntentVersion || l.path(in.NQN) != filepath.Join(l.dir, name) {
			continue // unreadable or foreign: proves nothing, and is left for a human
		}
		if !connected[in.NQN] {
			if err := l.forget(in.NQN); err != nil {
				return nil, err
			}
			continue
		}
		if in.BootID == l.bootID && !in.Adopted {
			owned[in.NQN] = true
		}
	}
	return owned, nil
}

// owningAttacher is the node's attacher with the ownership rule built in: every connect is
// preceded by its intent record and every verified disconnect removes it. Every path that
// connects (stage, heal) or disconnects (unstage, sweep) goes through it.
type owningAttacher struct {
	attacher
	ledger *connectionLedger
}

func (a *owningAttacher) Connect(ctx context.Context, t nvme.Target, o nvme.Options) (*nvme.Disk, error) {
	h, err := a.attacher.Health(t.NQN)
	if errors.Is(err, nvme.ErrNotManaged) {
		return nil, err // nothing to record: it is never connected
	}
	if err := a.ledger.intend(t, err != nil || h.Connected); err != nil {
		return nil, err
	}
	return a.attacher.Connect(ctx, t, o)
}

func (a *owningAttacher) Disconnect(ctx context.Context, nqn string) error {
	if err := a.attacher.Disconnect(ctx, nqn); err != nil {
		return err
	}
	return a.ledger.forget(nqn)
}
