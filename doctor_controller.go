package main

// The doctor's controller checks: settings, SSH, host key, version, pools, write test.

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/crypto/ssh/knownhosts"

	"srvlab.io/rds-csi/nvme"
	"srvlab.io/rds-csi/routeros"
)

// controllerChecks talk to the RDS with the controller's own client and settings, and only
// read, except the opt-in write test.
func (d *doctor) controllerChecks() {
	_, client := doctorRun(d, "rds settings", doctorHungSSH, func(context.Context) (checkResult, *routeros.Client) {
		return d.checkRDSSettings()
	})
	if client != nil {
		defer client.Close()
	}
	sshRes, ping := doctorRun(d, "ssh", doctorHungSSH, func(ctx context.Context) (checkResult, *error) {
		return d.checkSSH(ctx, client)
	})
	d.run("host key", doctorHungSSH, func(context.Context) checkResult { return d.checkHostKey(ping) })
	if sshRes.status != verdictOK {
		client = nil // every further check needs a working session
	}
	d.run("routeros version", doctorHungSSH, func(ctx context.Context) checkResult { return d.checkVersion(ctx, client) })
	for _, p := range onePathPerPool(append([]string{d.cfg.RDSVolumePath}, d.cfg.RDSAllowedPaths...)) {
		d.run("pool "+p, doctorHungSSH, func(ctx context.Context) checkResult { return d.checkPool(ctx, client, p) })
	}
	d.writeTest(client)
}

func (d *doctor) sshTarget() string { return d.cfg.RDSUser + "@" + d.rdsHostPort() }
func (d *doctor) rdsHostPort() string {
	return net.JoinHostPort(d.cfg.RDSAddress, strconv.Itoa(d.cfg.RDSSSHPort))
}

// sshTestCommand is a command the user can run to test the same login by hand.
func (d *doctor) sshTestCommand() string {
	return fmt.Sprintf("ssh -i %s -p %d %s@%s ':put [/system resource get version]'", d.cfg.RDSKeyFile, d.cfg.RDSSSHPort, d.cfg.RDSUser, d.cfg.RDSAddress)
}

func (d *doctor) keyscanCommand() string {
	return fmt.Sprintf("ssh-keyscan -p %d %s > %s", d.cfg.RDSSSHPort, d.cfg.RDSAddress, cmp.Or(d.cfg.RDSKnownHosts, "known_hosts"))
}

func (d *doctor) checkRDSSettings() (checkResult, *routeros.Client) {
	c := d.cfg
	var missing *missingSettingsError
	switch err := c.validateController(); {
	case errors.As(err, &missing):
		return failResult("set them as the controller gets them (flags, or the environment inside its pod)", "%s not set", strings.Join(missing.flags, ", ")), nil
	case errors.Is(err, errHostKeyUnpinned):
		return failResult(fmt.Sprintf("pin the RDS's host key: `%s`, check its fingerprint (ssh-keygen -lf known_hosts) against the RDS console, and pass --rds-known-hosts=known_hosts", d.keyscanCommand()),
			"--rds-known-hosts (RDS_KNOWN_HOSTS) is not set, so the RDS's identity cannot be checked"), nil
	case err != nil:
		return failResult(d.settingsFix(err.Error()), "%v", err), nil
	}
	client, err := routeros.New(rdsClientConfig(c, slog.New(slog.DiscardHandler), newMetrics()))
	if err != nil {
		return failResult(d.settingsFix(err.Error()), "%v", err), nil
	}
	pinning := "host key pinned by " + c.RDSKnownHosts
	if c.RDSInsecureSkipHostKey {
		pinning = "host key NOT verified"
	}
	return okResult("%s with key %s, %s", d.sshTarget(), c.RDSKeyFile, pinning), client
}

// settingsFix picks the advice for an error in the settings or in building the RouterOS
// client by the setting its message names.
func (d *doctor) settingsFix(msg string) string {
	switch {
	case strings.Contains(msg, "--rds-ssh-port"):
		return "set --rds-ssh-port to the RDS's SSH port (22 unless changed in /ip service)"
	case strings.Contains(msg, "known_hosts") || strings.Contains(msg, "host key"):
		return fmt.Sprintf("pin the RDS's host key for %s: `%s` (check the fingerprint against the RDS console)", d.rdsHostPort(), d.keyscanCommand())
	case strings.Contains(msg, "SSH key"):
		return "give --rds-key-file (RDS_KEY_FILE) an unencrypted private key (PEM or OpenSSH format) whose public half is imported for the RDS user"
	case strings.Contains(msg, "path"):
		return "set --rds-volume-path and --rds-allowed-paths to clean absolute directories on a pool, like /storage-pool/metal-csi"
	}
	return "fix the setting the message names, as the controller gets it (flag, or environment inside its pod)"
}

// checkSSH logs in; its value, for the host key check, is the login's error, nil when no
// login was tried (no client, or it timed out).
func (d *doctor) checkSSH(ctx context.Context, client *routeros.Client) (checkResult, *error) {
	if client == nil {
		return skipResult("not checked: needs valid RDS settings"), nil
	}
	start := time.Now()
	err := client.Ping(ctx)
	switch {
	case err == nil:
		return okResult("%s logged in and opened a session in %v", d.sshTarget(), time.Since(start).Round(time.Millisecond)), &err
	case errors.As(err, new(*knownhosts.KeyError)):
		return skipResult("login not tried: the RDS's host key was refused (see host key)"), &err
	case strings.Contains(err.Error(), "unable to authenticate"):
		return failResult(fmt.Sprintf("on the RDS, import the public half of %s for user %s (upload the .pub file, then `/user ssh-keys import public-key-file=<file>.pub user=%s`); test by hand: %s",
			d.cfg.RDSKeyFile, d.cfg.RDSUser, d.cfg.RDSUser, d.sshTestCommand()),
			"%s refused the key %s: %s", d.rdsHostPort(), d.cfg.RDSKeyFile, doctorSSHError(err)), &err
	}
	return failResult(fmt.Sprintf("check --rds-address and --rds-ssh-port (now %s), that SSH is enabled on the RDS (/ip service print) and that this pod's network reaches it; test from here: %s",
		d.rdsHostPort(), d.sshTestCommand()),
		"cannot reach %s: %s", d.sshTarget(), doctorSSHError(err)), &err
}

// doctorSSHError is what went wrong with the SSH connection, without the client's notes about
// retrying (the doctor does not retry).
func doctorSSHError(err error) string {
	var ke *knownhosts.KeyError
	var oe *net.OpError
	switch {
	case errors.As(err, &ke):
		return ke.Error()
	case errors.As(err, &oe):
		return oe.Error()
	}
	msg := err.Error()
	if i := strings.Index(msg, "ssh: "); i >= 0 {
		msg = msg[i:]
	}
	msg, _, _ = strings.Cut(msg, " (next attempt")
	return msg
}

func (d *doctor) checkHostKey(login *error) checkResult {
	switch {
	case d.cfg.RDSInsecureSkipHostKey:
		return warnResult(fmt.Sprintf("pin it: `%s`, check its fingerprint (ssh-keygen -lf known_hosts) against the RDS console, then pass --rds-known-hosts=known_hosts instead of --rds-insecure-skip-host-key", d.keyscanCommand()),
			"not verified (--rds-insecure-skip-host-key): anything answering at %s is taken for the RDS", d.cfg.RDSAddress)
	case login == nil:
		return skipResult("not checked: no SSH handshake was made")
	case errors.As(*login, new(*knownhosts.KeyError)):
		return failResult(fmt.Sprintf("if the RDS was reinstalled or its key regenerated, compare the new key's fingerprint with the RDS console, then re-pin it: `%s` (and update the Secret it comes from); otherwise find out what answers at %s before trusting it",
			d.keyscanCommand(), d.cfg.RDSAddress),
			"the key %s presented does not match %s (%s)", d.rdsHostPort(), d.cfg.RDSKnownHosts, doctorSSHError(*login))
	case *login == nil || strings.Contains((*login).Error(), "unable to authenticate"):
		// the host key is checked during key exchange, before the user is authenticated
		return okResult("the RDS presented the key pinned in %s", d.cfg.RDSKnownHosts)
	}
	return skipResult("not checked: the SSH handshake did not get that far (see ssh)")
}

func (d *doctor) checkVersion(ctx context.Context, client *routeros.Client) checkResult {
	if client == nil {
		return skipResult("not checked: needs a working SSH session")
	}
	v, err := client.Version(ctx)
	if err != nil {
		return failResult("the RouterOS user needs the read policy; "+d.sshTestCommand()+" shows what the RDS answers", "cannot read the RouterOS version: %v", err)
	}
	major, minor, parsed := doctorParseVersion(v)
	switch {
	case !parsed:
		return warnResult("check the version on the RDS console (/system resource print); nvme-tcp-server-nqn needs RouterOS 7.21 or later",
			"RouterOS %q: cannot tell whether it supports nvme-tcp-server-nqn", v)
	case major > doctorNQNVersion[0] || major == doctorNQNVersion[0] && minor >= doctorNQNVersion[1]:
		return okResult("RouterOS %s: supports nvme-tcp-server-nqn, so volumes are exported as %s", v, defaultNQN("<volume-id>"))
	}
	found := fmt.Sprintf("RouterOS %s rejects nvme-tcp-server-nqn (it needs 7.21), so each volume's NQN is its slot name (pvc-…)", v)
	if !doctorSlotNQNsManageable() {
		return failResult("upgrade RouterOS on the RDS to 7.21 or later: `/system package update check-for-updates`, then `/system package update install` (it reboots the RDS)",
			"%s, and the node plugin refuses a bare slot name as an NQN: no volume could be attached", found)
	}
	slotFix := "set every node's --managed-nqn-prefix to the slot prefix pvc- (not nqn.…:pvc-), or upgrade RouterOS to 7.21 or later"
	if p := d.cfg.ManagedNQNPrefix; strings.HasPrefix(p, "nqn.") {
		return failResult(slotFix, "%s, which --managed-nqn-prefix %q never matches: nodes would refuse every volume", found, p)
	}
	return warnResult(slotFix, "%s", found)
}

// doctorSlotNQNsManageable asks the node's own guard whether a slot prefix lets the node plugin
// attach a volume whose NQN is its bare slot name, so the advice for an old RouterOS works.
func doctorSlotNQNsManageable() bool {
	g, err := nvme.NewGuard("pvc-")
	return err == nil && g.Manages("pvc-00000000-0000-4000-8000-000000000000")
}

// doctorParseVersion reads major and minor from "7.24.4 (stable)" or "7.21rc2".
func doctorParseVersion(v string) (major, minor int, ok bool) {
	_, err := fmt.Sscanf(strings.TrimSpace(v), "%d.%d", &major, &minor)
	return major, minor, err == nil
}

func (d *doctor) checkPool(ctx context.Context, client *routeros.Client, p string) checkResult {
	if err := routeros.ValidatePath(p); err != nil {
		return failResult("set --rds-volume-path (and --rds-allowed-paths) to directories on a pool, like /storage-pool/metal-csi", "%v", err)
	}
	if client == nil {
		return skipResult("not checked: needs a working SSH session")
	}
	pool, err := client.PoolCapacity(ctx, p)
	switch {
	case errors.Is(err, routeros.ErrNotFound):
		return failResult("the first component of the path must be a pool's mount-point (`/disk print detail` on the RDS shows each disk's mount-point): fix --rds-volume-path (RDS_VOLUME_PATH) or --rds-allowed-paths",
			"no pool is mounted at /%s: %v", routeros.PoolName(p), err)
	case err != nil:
		return failResult("the RouterOS user needs the read policy; "+d.sshTestCommand()+" shows what the RDS answers", "cannot read the pool's capacity: %v", err)
	}
	pct := int64(0)
	if pool.Size > 0 {
		pct = pool.Free * 100 / pool.Size
	}
	found := fmt.Sprintf("pool %s: %s free of %s (%d%%)", pool.Name, humanBytes(pool.Free), humanBytes(pool.Size), pct)
	const spaceFix = "free space on the pool (delete volumes and snapshots nothing uses; `kubectl get pv` lists the ones in use) or grow it: creating and expanding volumes fails once it is full"
	switch {
	case pool.Free <= d.cfg.CapacityReserve:
		return warnResult(spaceFix+"; or lower --capacity-reserve", "%s, not more than --capacity-reserve %s, so the controller reports no capacity", found, humanBytes(d.cfg.CapacityReserve))
	case pct < doctorLowFreePercent:
		return warnResult(spaceFix, "%s: under %d%% free", found, doctorLowFreePercent)
	}
	return okResult("%s", found)
}

// writeTest proves the RouterOS user may add and remove disks: it adds a 1 MiB disk under the
// volume path, then removes the disk and its file, each step under its own deadline. The
// removals run even when the add failed: a failed or timed-out add may still take effect.
func (d *doctor) writeTest(client *routeros.Client) {
	if !d.opts.writeTest {
		d.print("write test", skipResult("not run: it adds a 1 MiB disk on the RDS and removes it again; run `rds-csi doctor --mode=controller --write-test` to prove the user may add and remove disks"))
		return
	}
	if client == nil {
		d.print("write test", skipResult("not run: needs a working SSH session"))
		return
	}
	var b [4]byte
	rand.Read(b[:]) // it never fails; the name can never be a volume's slot
	slot := "rds-csi-doctor-" + hex.EncodeToString(b[:])
	file := path.Join(d.cfg.RDSVolumePath, volumeFileName(slot))
	d.run("write test: add disk", doctorHungSSH+"; the disk may still appear: the removal steps below clean it up", func(ctx context.Context) checkResult {
		disk, err := client.CreateDisk(ctx, routeros.CreateDiskRequest{Slot: slot, FilePath: file, SizeBytes: doctorWriteTestSize, NQN: defaultNQN(slot)})
		if err != nil {
			return failResult("the RouterOS user needs the write policy (its group in /user group), and the pool needs space; the RDS's own words are above",
				"cannot add disk %s (%s): %v", slot, file, err)
		}
		return okResult("added %s: %s, %s, exported as %s", slot, disk.FilePath, humanBytes(disk.Size), disk.NQN)
	})
	removeDisk := fmt.Sprintf("remove it on the RDS: /disk remove [find slot=%q]", slot)
	removeFile := fmt.Sprintf("remove it on the RDS: /file remove [find name=%q]", strings.TrimPrefix(file, "/"))
	d.run("write test: remove disk", doctorHungSSH+"; then "+removeDisk, func(ctx context.Context) checkResult {
		if err := client.RemoveDisk(ctx, slot); err != nil {
			return failResult(removeDisk, "cannot remove disk %s: %v", slot, err)
		}
		switch _, err := client.GetDisk(ctx, slot); {
		case errors.Is(err, routeros.ErrNotFound):
			return okResult("removed %s; the RDS no longer lists it", slot)
		case err != nil:
			return failResult(removeDisk, "removed %s, but cannot confirm it is gone: %v", slot, err)
		}
		return failResult(removeDisk, "the RDS still lists disk %s after removing it", slot)
	})
	d.run("write test: remove file", doctorHungSSH+"; then "+removeFile, func(ctx context.Context) checkResult {
		if err := client.RemoveFile(ctx, file); err != nil {
			return failResult(removeFile, "cannot remove %s: %v", file, err)
		}
		switch files, err := client.ListFiles(ctx, d.cfg.RDSVolumePath); {
		case err != nil:
			return failResult(removeFile, "removed %s, but cannot confirm it is gone: %v", file, err)
		case slices.ContainsFunc(files, func(f routeros.File) bool { return f.Path == file }):
			return failResult(removeFile, "the RDS still lists %s after removing it", file)
		}
		return okResult("removed %s; nothing of the test is left", file)
	})
}
