package main

import (
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

// The controller checks talk to the RDS with the same client and settings as the
// controller. They only read, except the opt-in write test.

// doctorHungSSH is the advice for a controller check that did not finish in time.
const doctorHungSSH = "the RDS accepted the connection but does not answer: check its load on the console (/system resource print) and that no firewall drops packets between here and it"

// doctorNQNVersion is the first RouterOS release that accepts nvme-tcp-server-nqn.
var doctorNQNVersion = [2]int{7, 21}

// doctorLowFreePercent is the free-space share under which the pool check warns.
const doctorLowFreePercent = 10

// doctorWriteTestSize is the size of the write test's disk.
const doctorWriteTestSize = 1 << 20

// doctorPing is the ssh check's answer, for the host key check. ran is false when the
// check did not get to an answer (no client, or it timed out).
type doctorPing struct {
	ran bool
	err error
}

func (d *doctor) controllerChecks() {
	_, client := doctorRun(d, "rds settings", doctorHungSSH, func(context.Context) (checkResult, *routeros.Client) {
		return d.checkRDSSettings()
	})
	if client != nil {
		defer client.Close()
	}
	sshRes, ping := doctorRun(d, "ssh", doctorHungSSH, func(ctx context.Context) (checkResult, doctorPing) {
		return d.checkSSH(ctx, client)
	})
	d.run("host key", doctorHungSSH, func(context.Context) checkResult { return d.checkHostKey(client, ping) })
	if sshRes.status != verdictOK {
		client = nil // every further check needs a working session
	}
	d.run("routeros version", doctorHungSSH, func(ctx context.Context) checkResult { return d.checkVersion(ctx, client) })
	for _, p := range d.poolPaths() {
		d.run("pool "+p, doctorHungSSH, func(ctx context.Context) checkResult { return d.checkPool(ctx, client, p) })
	}
	d.writeTest(client)
}

func (d *doctor) sshTarget() string {
	return fmt.Sprintf("%s@%s", d.cfg.RDSUser, d.rdsHostPort())
}

// rdsHostPort is the RDS's SSH address as the RouterOS client dials it.
func (d *doctor) rdsHostPort() string {
	return net.JoinHostPort(d.cfg.RDSAddress, strconv.Itoa(d.cfg.RDSSSHPort))
}

// sshTestCommand is a command the user can run to test the same login by hand.
func (d *doctor) sshTestCommand() string {
	return fmt.Sprintf("ssh -i %s -p %d %s@%s ':put [/system resource get version]'", d.cfg.RDSKeyFile, d.cfg.RDSSSHPort, d.cfg.RDSUser, d.cfg.RDSAddress)
}

func (d *doctor) keyscanCommand() string {
	file := d.cfg.RDSKnownHosts
	if file == "" {
		file = "known_hosts"
	}
	return fmt.Sprintf("ssh-keyscan -p %d %s > %s", d.cfg.RDSSSHPort, d.cfg.RDSAddress, file)
}

func (d *doctor) checkRDSSettings() (checkResult, *routeros.Client) {
	c := d.cfg
	if err := c.validateController(); err != nil {
		return d.refusedSettings(err), nil
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

// refusedSettings is the finding and fix for the controller's refusal of its settings
// (validateController).
func (d *doctor) refusedSettings(err error) checkResult {
	var missing *missingSettingsError
	switch {
	case errors.As(err, &missing):
		return failResult("set them as the controller gets them (flags, or the environment inside its pod)", "%s not set", strings.Join(missing.flags, ", "))
	case errors.Is(err, errHostKeyUnpinned):
		return failResult(fmt.Sprintf("pin the RDS's host key: `%s`, check its fingerprint (ssh-keygen -lf known_hosts) against the RDS console, and pass --rds-known-hosts=known_hosts", d.keyscanCommand()),
			"--rds-known-hosts (RDS_KNOWN_HOSTS) is not set, so the RDS's identity cannot be checked")
	}
	return failResult(d.settingsFix(err.Error()), "%v", err)
}

// settingsFix picks the advice for an error in the settings or building the RouterOS
// client: the message says which setting it is about.
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

func (d *doctor) checkSSH(ctx context.Context, client *routeros.Client) (checkResult, doctorPing) {
	if client == nil {
		return skipResult("not checked: needs valid RDS settings"), doctorPing{}
	}
	start := time.Now()
	err := client.Ping(ctx)
	out := doctorPing{ran: true, err: err}
	switch {
	case err == nil:
		return okResult("%s logged in and opened a session in %v", d.sshTarget(), time.Since(start).Round(time.Millisecond)), out
	case doctorHostKeyRejected(err):
		return skipResult("login not tried: the RDS's host key was refused (see host key)"), out
	case strings.Contains(err.Error(), "unable to authenticate"):
		return failResult(fmt.Sprintf("on the RDS, import the public half of %s for user %s (upload the .pub file, then `/user ssh-keys import public-key-file=<file>.pub user=%s`); test by hand: %s",
			d.cfg.RDSKeyFile, d.cfg.RDSUser, d.cfg.RDSUser, d.sshTestCommand()),
			"%s refused the key %s: %s", d.rdsHostPort(), d.cfg.RDSKeyFile, doctorSSHError(err)), out
	}
	return failResult(fmt.Sprintf("check --rds-address and --rds-ssh-port (now %s), that SSH is enabled on the RDS (/ip service print) and that this pod's network reaches it; test from here: %s",
		d.rdsHostPort(), d.sshTestCommand()),
		"cannot reach %s: %s", d.sshTarget(), doctorSSHError(err)), out
}

// doctorSSHError is what went wrong with the SSH connection, without the client's notes
// about retrying (the doctor does not retry).
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

// doctorHostKeyRejected reports whether err is the known_hosts check refusing the RDS's key.
func doctorHostKeyRejected(err error) bool {
	var ke *knownhosts.KeyError
	return errors.As(err, &ke)
}

func (d *doctor) checkHostKey(client *routeros.Client, ping doctorPing) checkResult {
	switch {
	case d.cfg.RDSInsecureSkipHostKey:
		return warnResult(fmt.Sprintf("pin it: `%s`, check its fingerprint (ssh-keygen -lf known_hosts) against the RDS console, then pass --rds-known-hosts=known_hosts instead of --rds-insecure-skip-host-key", d.keyscanCommand()),
			"not verified (--rds-insecure-skip-host-key): anything answering at %s is taken for the RDS", d.cfg.RDSAddress)
	case client == nil || !ping.ran:
		return skipResult("not checked: no SSH handshake was made")
	case doctorHostKeyRejected(ping.err):
		return failResult(fmt.Sprintf("if the RDS was reinstalled or its key regenerated, compare the new key's fingerprint with the RDS console, then re-pin it: `%s` (and update the Secret it comes from); otherwise find out what answers at %s before trusting it",
			d.keyscanCommand(), d.cfg.RDSAddress),
			"the key %s presented does not match %s (%s)", d.rdsHostPort(), d.cfg.RDSKnownHosts, doctorSSHError(ping.err))
	case ping.err == nil || strings.Contains(ping.err.Error(), "unable to authenticate"):
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

// doctorSlotNQNsManageable asks the node side's own guard whether a slot-style managed
// prefix lets the node plugin attach a volume whose NQN is its bare slot name, so that the
// advice for an old RouterOS is one that works.
func doctorSlotNQNsManageable() bool {
	g, err := nvme.NewGuard("pvc-")
	return err == nil && g.Manages("pvc-00000000-0000-4000-8000-000000000000")
}

// doctorParseVersion reads major and minor from "7.24.4 (stable)".
func doctorParseVersion(v string) (major, minor int, ok bool) {
	num, _, _ := strings.Cut(strings.TrimSpace(v), " ")
	parts := strings.Split(num, ".")
	if len(parts) < 2 {
		return 0, 0, false
	}
	major, err1 := strconv.Atoi(parts[0])
	minorText := parts[1]
	if i := strings.IndexFunc(minorText, func(r rune) bool { return r < '0' || r > '9' }); i >= 0 {
		minorText = minorText[:i] // a release candidate prints like 7.21rc2
	}
	minor, err2 := strconv.Atoi(minorText)
	return major, minor, err1 == nil && err2 == nil
}

// poolPaths are the volume path and the further allowed paths, one per pool.
func (d *doctor) poolPaths() []string {
	return onePathPerPool(append([]string{d.cfg.RDSVolumePath}, d.cfg.RDSAllowedPaths...))
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

// writeTest proves the RouterOS user may add and remove disks: it adds a 1 MiB disk under
// the volume path and removes the disk and its file again, each step under its own
// deadline. The removals run even when the add failed, since a failed or timed-out add
// may still have taken effect on the RDS.
func (d *doctor) writeTest(client *routeros.Client) {
	if !d.opts.writeTest {
		d.print("write test", skipResult("not run: it adds a 1 MiB disk on the RDS and removes it again; run `rds-csi doctor --mode=controller --write-test` to prove the user may add and remove disks"))
		return
	}
	if client == nil {
		d.print("write test", skipResult("not run: needs a working SSH session"))
		return
	}
	slot, err := doctorWriteTestSlot()
	if err != nil {
		d.print("write test", failResult("re-run; the system's random source failed", "%v", err))
		return
	}
	file := path.Join(d.cfg.RDSVolumePath, volumeFileName(slot))
	nqn := defaultNQN(slot)
	d.run("write test: add disk", doctorHungSSH+"; the disk may still appear: the removal steps below clean it up", func(ctx context.Context) checkResult {
		disk, err := client.CreateDisk(ctx, routeros.CreateDiskRequest{Slot: slot, FilePath: file, SizeBytes: doctorWriteTestSize, NQN: nqn})
		if err != nil {
			return failResult("the RouterOS user needs the write policy (its group in /user group), and the pool needs space; the RDS's own words are above",
				"cannot add disk %s (%s): %v", slot, file, err)
		}
		return okResult("added %s: %s, %s, exported as %s", slot, disk.FilePath, humanBytes(disk.Size), disk.NQN)
	})
	removeDisk := fmt.Sprintf("remove it on the RDS: /disk remove [find slot=%q]", slot)
	removeFile := fmt.Sprintf("remove it on the RDS: /file remove [find name=%q]", strings.TrimPrefix(file, "/"))
	d.run("write test: remove disk", doctorHungSSH+"; then "+removeDisk, func(ctx context.Context) checkResult {
		fix := removeDisk
		if err := client.RemoveDisk(ctx, slot); err != nil {
			return failResult(fix, "cannot remove disk %s: %v", slot, err)
		}
		_, err := client.GetDisk(ctx, slot)
		switch {
		case errors.Is(err, routeros.ErrNotFound):
			return okResult("removed %s; the RDS no longer lists it", slot)
		case err != nil:
			return failResult(fix, "removed %s, but cannot confirm it is gone: %v", slot, err)
		}
		return failResult(fix, "the RDS still lists disk %s after removing it", slot)
	})
	d.run("write test: remove file", doctorHungSSH+"; then "+removeFile, func(ctx context.Context) checkResult {
		fix := removeFile
		if err := client.RemoveFile(ctx, file); err != nil {
			return failResult(fix, "cannot remove %s: %v", file, err)
		}
		files, err := client.ListFiles(ctx, d.cfg.RDSVolumePath)
		switch {
		case err != nil:
			return failResult(fix, "removed %s, but cannot confirm it is gone: %v", file, err)
		case slices.ContainsFunc(files, func(f routeros.File) bool { return f.Path == file }):
			return failResult(fix, "the RDS still lists %s after removing it", file)
		}
		return okResult("removed %s; nothing of the test is left", file)
	})
}

// doctorWriteTestSlot names the write test's disk so that it can never be a volume's slot.
func doctorWriteTestSlot() (string, error) {
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("name the test disk: %w", err)
	}
	return "rds-csi-doctor-" + hex.EncodeToString(b[:]), nil
}
