package nvme

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLoadOrCreateIdentity(t *testing.T) {
	const (
		existingNQN = "nqn.2014-08.org.nvmexpress:uuid:aaaaaaaa-1111-2222-3333-444444444444"
		customNQN   = "nqn.2020-01.org.example:node-7"
		existingID  = "bbbbbbbb-1111-2222-3333-444444444444"
		dmiUUID     = "4C4C4544-0042-3510-8052-B4C04F4E4B32"
	)
	tests := []struct {
		name        string
		hostnqn     *string // nil = file absent
		hostid      *string
		productUUID string // "" = no DMI file
		wantNQN     string // "" = must be uuid form of the resulting hostid
		wantID      string // "" = any valid random UUID
		wantCreated bool
		wantErr     error
	}{
		{name: "both present", hostnqn: ptr(existingNQN + "\n"), hostid: ptr(existingID + "\n"),
			wantNQN: existingNQN, wantID: existingID},
		{name: "none, DMI readable", productUUID: dmiUUID + "\n",
			wantID: strings.ToLower(dmiUUID), wantCreated: true},
		{name: "none, DMI placeholder", productUUID: "00000000-0000-0000-0000-000000000000",
			wantCreated: true},
		{name: "none, DMI garbage", productUUID: "Not Settable", wantCreated: true},
		{name: "none, no DMI", wantCreated: true},
		{name: "hostnqn only, uuid form", hostnqn: ptr(existingNQN), productUUID: dmiUUID,
			wantNQN: existingNQN, wantID: "aaaaaaaa-1111-2222-3333-444444444444", wantCreated: true},
		{name: "hostnqn only, custom form", hostnqn: ptr(customNQN), productUUID: dmiUUID,
			wantNQN: customNQN, wantID: strings.ToLower(dmiUUID), wantCreated: true},
		{name: "hostid only", hostid: ptr(existingID), productUUID: dmiUUID,
			wantNQN: UUIDHostNQNPrefix + existingID, wantID: existingID, wantCreated: true},
		{name: "empty hostnqn", hostnqn: ptr(""), hostid: ptr(existingID), wantErr: ErrIdentityConflict},
		{name: "garbage hostid", hostnqn: ptr(existingNQN), hostid: ptr("node-7"), wantErr: ErrIdentityConflict},
		{name: "hostnqn with comma", hostnqn: ptr(customNQN + ",hostid=x"), wantErr: ErrIdentityConflict},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hostDir, sysfs := filepath.Join(t.TempDir(), "etc/nvme"), t.TempDir()
			writeIf(t, filepath.Join(hostDir, "hostnqn"), tt.hostnqn)
			writeIf(t, filepath.Join(hostDir, "hostid"), tt.hostid)
			if tt.productUUID != "" {
				writeIf(t, filepath.Join(sysfs, "class/dmi/id/product_uuid"), &tt.productUUID)
			}
			before := snapshotDir(t, hostDir)

			id, created, err := LoadOrCreateIdentity(hostDir, sysfs)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				if !strings.Contains(err.Error(), "fix the file or remove it") {
					t.Errorf("error %q does not say how to fix it", err)
				}
				if after := snapshotDir(t, hostDir); after != before {
					t.Errorf("identity files changed on error: %q -> %q", before, after)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if created != tt.wantCreated {
				t.Errorf("created = %v, want %v", created, tt.wantCreated)
			}
			if !uuidRe.MatchString(id.HostID) {
				t.Errorf("HostID %q is not a UUID", id.HostID)
			}
			if tt.wantID != "" && id.HostID != tt.wantID {
				t.Errorf("HostID = %q, want %q", id.HostID, tt.wantID)
			}
			wantNQN := tt.wantNQN
			if wantNQN == "" {
				wantNQN = UUIDHostNQNPrefix + id.HostID
			}
			if id.HostNQN != wantNQN {
				t.Errorf("HostNQN = %q, want %q", id.HostNQN, wantNQN)
			}
			// The files now hold the identity, readable by all (nvme-cli and other tools).
			for name, want := range map[string]string{"hostnqn": id.HostNQN, "hostid": id.HostID} {
				p := filepath.Join(hostDir, name)
				b, err := os.ReadFile(p)
				if err != nil || strings.TrimSpace(string(b)) != want {
					t.Errorf("%s = %q, %v; want %q", name, b, err, want)
				}
				if fi, err := os.Stat(p); err == nil && created && fi.Mode().Perm() != 0o644 && !strings.Contains(before, name+"=") {
					t.Errorf("%s mode %v, want 0644", name, fi.Mode().Perm())
				}
			}
			// Loaded again: the same identity, nothing created (stable forever after).
			id2, created2, err := LoadOrCreateIdentity(hostDir, t.TempDir())
			if err != nil || id2 != id || created2 {
				t.Errorf("second load = %+v, %v, %v; want %+v, false, nil", id2, created2, err, id)
			}
			if entries, _ := os.ReadDir(hostDir); len(entries) != 2 {
				t.Errorf("host dir holds %d entries, want exactly hostnqn and hostid (no temp files)", len(entries))
			}
		})
	}
}

func TestLoadOrCreateIdentityRandomIsUnique(t *testing.T) {
	a, _, err := LoadOrCreateIdentity(t.TempDir(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	b, _, err := LoadOrCreateIdentity(t.TempDir(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if a.HostID == b.HostID {
		t.Fatalf("two hosts without DMI got the same random host ID %s", a.HostID)
	}
}

func TestWriteOnceKeepsExistingFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "hostid")
	const theirs = "cccccccc-1111-2222-3333-444444444444"
	if err := os.WriteFile(p, []byte(theirs+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := writeOnce(p, "dddddddd-1111-2222-3333-444444444444", validHostID)
	if err != nil || got != theirs {
		t.Fatalf("writeOnce over an existing file = %q, %v; want the existing %q", got, err, theirs)
	}
}

func TestLoadOrCreateIdentityUnwritableDir(t *testing.T) {
	parent := t.TempDir()
	blocker := filepath.Join(parent, "file")
	if err := os.WriteFile(blocker, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	_, _, err := LoadOrCreateIdentity(filepath.Join(blocker, "nvme"), t.TempDir())
	if err == nil || !strings.Contains(err.Error(), "mount the host's /etc/nvme") {
		t.Fatalf("err = %v, want an error saying to mount the host's /etc/nvme", err)
	}
}

func ptr(s string) *string { return &s }

func writeIf(t *testing.T, path string, content *string) {
	t.Helper()
	if content == nil {
		return
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(*content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// snapshotDir renders a directory's files and contents, to detect any change.
func snapshotDir(t *testing.T, dir string) string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		return ""
	}
	var sb strings.Builder
	for _, e := range entries {
		b, _ := os.ReadFile(filepath.Join(dir, e.Name()))
		sb.WriteString(e.Name() + "=" + string(b) + ";")
	}
	return sb.String()
}
