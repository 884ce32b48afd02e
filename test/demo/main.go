// Command demo runs rds-csi against the built-in simulated RDS through the real CSI gRPC
// API and narrates each step with its time: create, attach, write, expand, snapshot,
// restore, detach, delete. Where the machine has no NVMe/TCP, a loop device stands in for
// the NVMe attach (the driver binary is built with the loopnvme tag for that).
//
//	go run ./test/demo --rds-csi bin/rds-csi-loop --rds-sim bin/rds-sim
//
// It needs root (loop devices and mounts) and leaves nothing behind.
package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"srvlab.io/rds-csi/routeros/sim"
	"srvlab.io/rds-csi/test/internal/scratch"
)

const (
	managedPrefix = "nqn.2000-02.com.mikrotik:pvc-"
	mib           = int64(1) << 20
)

func main() {
	driverBin := flag.String("rds-csi", "bin/rds-csi-loop", "driver binary built with -tags loopnvme")
	simBin := flag.String("rds-sim", "bin/rds-sim", "simulator binary")
	keep := flag.Bool("keep", false, "keep the work directory for inspection")
	flag.Parse()
	d := &demo{start: time.Now()}
	err := d.run(*driverBin, *simBin)
	d.stopAll()
	if err != nil {
		fmt.Printf("\nDEMO FAILED after %.1fs: %v\n(work dir %s kept for inspection)\n", time.Since(d.start).Seconds(), err, d.work)
		os.Exit(1)
	}
	if !*keep {
		if err := scratch.RemoveUnmounted(d.work); err != nil {
			fmt.Printf("\nwork dir %s kept: %v\n", d.work, err)
			os.Exit(1)
		}
	}
	fmt.Printf("\ndemo complete in %.1fs: %d steps\n", time.Since(d.start).Seconds(), d.steps)
}

type demo struct {
	start     time.Time
	steps     int
	work      string
	procs     []*exec.Cmd
	conn      *grpc.ClientConn
	ctrl      csi.ControllerClient
	node      csi.NodeClient
	snapshots bool
}

// step runs one narrated step.
func (d *demo) step(what string, f func() (string, error)) error {
	d.steps++
	t0 := time.Now()
	detail, err := f()
	mark := "ok  "
	if err != nil {
		mark = "FAIL"
	}
	fmt.Printf("[%5.2fs] %s %-44s %6.0f ms  %s\n", time.Since(d.start).Seconds(), mark, what, float64(time.Since(t0).Microseconds())/1000, detail)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

func (d *demo) stopAll() {
	if d.conn != nil {
		d.conn.Close()
	}
	for i := len(d.procs) - 1; i >= 0; i-- {
		p := d.procs[i]
		_ = p.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { _ = p.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = p.Process.Kill()
		}
	}
}

func (d *demo) run(driverBin, simBin string) error {
	if os.Geteuid() != 0 {
		return errors.New("the demo mounts filesystems and attaches loop devices: run it as root")
	}
	work, err := os.MkdirTemp("", "rds-csi-demo")
	if err != nil {
		return err
	}
	d.work = work
	fmt.Printf("rds-csi demo: simulated RDS + driver (controller and node in one process), work dir %s\n\n", work)

	var simAddr string
	if err := d.step("start the simulated RDS", func() (string, error) {
		addr, err := d.startSim(simBin)
		simAddr = addr
		return "RouterOS CLI over SSH on " + addr, err
	}); err != nil {
		return err
	}
	if err := d.step("start rds-csi --mode=all", func() (string, error) { return d.startDriver(driverBin, simAddr) }); err != nil {
		return err
	}
	return d.lifecycle()
}

func (d *demo) startSim(simBin string) (string, error) {
	client, pemBytes, err := sim.NewKey()
	if err != nil {
		return "", err
	}
	keyFile := filepath.Join(d.work, "id_ed25519")
	if err := os.WriteFile(keyFile, pemBytes, 0o600); err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(d.work, "authorized_keys"), ssh.MarshalAuthorizedKey(client.PublicKey()), 0o600); err != nil {
		return "", err
	}
	hostKey, err := sim.LoadOrCreateHostKey(filepath.Join(d.work, "host_key"))
	if err != nil {
		return "", err
	}
	cmd := exec.Command(simBin, "--listen", "127.0.0.1:0", "--dir", filepath.Join(d.work, "rds"),
		"--host-key", filepath.Join(d.work, "host_key"), "--authorized-keys", filepath.Join(d.work, "authorized_keys"))
	out, err := cmd.StdoutPipe()
	if err != nil {
		return "", err
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return "", fmt.Errorf("start %s: %w (run `make build` first)", simBin, err)
	}
	d.procs = append(d.procs, cmd)
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("simulator did not start: %w", err)
	}
	fields := strings.Fields(strings.TrimPrefix(line, "rds-sim: listening on "))
	if len(fields) == 0 {
		return "", fmt.Errorf("unexpected simulator output %q", line)
	}
	addr := fields[0]
	known := knownhosts.Line([]string{knownhosts.Normalize(addr)}, hostKey.PublicKey())
	return addr, os.WriteFile(filepath.Join(d.work, "known_hosts"), []byte(known+"\n"), 0o600)
}

func (d *demo) startDriver(driverBin, simAddr string) (string, error) {
	host, port, err := net.SplitHostPort(simAddr)
	if err != nil {
		return "", err
	}
	sock := filepath.Join(d.work, "csi.sock")
	cmd := exec.Command(driverBin, "--mode=all", "--endpoint=unix://"+sock, "--node-id=demo-node",
		"--metrics-address=", "--rds-address="+host, "--rds-ssh-port="+port, "--rds-user=admin",
		"--rds-key-file="+filepath.Join(d.work, "id_ed25519"), "--rds-known-hosts="+filepath.Join(d.work, "known_hosts"),
		"--managed-nqn-prefix="+managedPrefix, "--state-dir="+filepath.Join(d.work, "state"),
		"--nvme-host-dir="+filepath.Join(d.work, "etc-nvme"), "--log-level=warn")
	cmd.Env = append(os.Environ(), "RDS_CSI_LOOP_NVME_EXPORTS_DIR="+filepath.Join(d.work, "rds", ".nvme-exports"))
	var logBuf bytes.Buffer
	cmd.Stderr = &logBuf
	if err := cmd.Start(); err != nil {
		return "", fmt.Errorf("start %s: %w (run `make demo`, which builds it)", driverBin, err)
	}
	d.procs = append(d.procs, cmd)
	d.conn, err = grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return "", err
	}
	id := csi.NewIdentityClient(d.conn)
	deadline := time.Now().Add(20 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		p, err := id.Probe(ctx, &csi.ProbeRequest{})
		cancel()
		if err == nil && p.GetReady().GetValue() {
			break
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("driver not ready after 20 s (last: %v); its log:\n%s", err, logBuf.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	d.ctrl, d.node = csi.NewControllerClient(d.conn), csi.NewNodeClient(d.conn)
	caps, err := d.ctrl.ControllerGetCapabilities(context.Background(), &csi.ControllerGetCapabilitiesRequest{})
	if err != nil {
		return "", err
	}
	for _, c := range caps.Capabilities {
		if c.GetRpc().GetType() == csi.ControllerServiceCapability_RPC_CREATE_DELETE_SNAPSHOT {
			d.snapshots = true
		}
	}
	return "Probe ready (the RDS answered over SSH)", nil
}

func fsCap() *csi.VolumeCapability {
	return &csi.VolumeCapability{
		AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{FsType: "xfs"}},
		AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER},
	}
}

// volume is one volume the demo attaches.
type volume struct {
	id      string
	context map[string]string
	staging string
	target  string
}

func (d *demo) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 60*time.Second)
}

func (d *demo) create(name string, size int64, src *csi.VolumeContentSource) (*volume, string, error) {
	ctx, cancel := d.ctx()
	defer cancel()
	resp, err := d.ctrl.CreateVolume(ctx, &csi.CreateVolumeRequest{Name: name, CapacityRange: &csi.CapacityRange{RequiredBytes: size},
		VolumeCapabilities: []*csi.VolumeCapability{fsCap()}, Parameters: map[string]string{"volumePath": "/storage-pool/metal-csi"},
		VolumeContentSource: src})
	if err != nil {
		return nil, "", err
	}
	v := resp.Volume
	return &volume{id: v.VolumeId, context: v.VolumeContext,
			staging: filepath.Join(d.work, "kubelet", "staging", v.VolumeId), target: filepath.Join(d.work, "kubelet", "pods", v.VolumeId, "mount")},
		fmt.Sprintf("%s, %d MiB, %s", v.VolumeId, v.CapacityBytes/mib, v.VolumeContext["nqn"]), nil
}

func (d *demo) attach(v *volume) (string, error) {
	ctx, cancel := d.ctx()
	defer cancel()
	pub, err := d.ctrl.ControllerPublishVolume(ctx, &csi.ControllerPublishVolumeRequest{VolumeId: v.id, NodeId: "demo-node",
		VolumeCapability: fsCap(), VolumeContext: v.context})
	if err != nil {
		return "", err
	}
	// kubelet creates the staging directory and the publish target's parent.
	for _, dir := range []string{v.staging, filepath.Dir(v.target)} {
		if err := os.MkdirAll(dir, 0o750); err != nil {
			return "", err
		}
	}
	if _, err := d.node.NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{VolumeId: v.id, StagingTargetPath: v.staging,
		VolumeCapability: fsCap(), VolumeContext: v.context, PublishContext: pub.PublishContext}); err != nil {
		return "", err
	}
	if _, err := d.node.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{VolumeId: v.id, StagingTargetPath: v.staging,
		TargetPath: v.target, VolumeCapability: fsCap(), VolumeContext: v.context, PublishContext: pub.PublishContext}); err != nil {
		return "", err
	}
	return "ControllerPublish, NodeStage (format if blank, mount), NodePublish (bind mount) at " + v.target, nil
}

func (d *demo) detach(v *volume) (string, error) {
	ctx, cancel := d.ctx()
	defer cancel()
	if _, err := d.node.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: v.id, TargetPath: v.target}); err != nil {
		return "", err
	}
	if _, err := d.node.NodeUnstageVolume(ctx, &csi.NodeUnstageVolumeRequest{VolumeId: v.id, StagingTargetPath: v.staging}); err != nil {
		return "", err
	}
	if _, err := d.ctrl.ControllerUnpublishVolume(ctx, &csi.ControllerUnpublishVolumeRequest{VolumeId: v.id, NodeId: "demo-node"}); err != nil {
		return "", err
	}
	return "NodeUnpublish, NodeUnstage (unmount, disconnect), ControllerUnpublish", nil
}

func (d *demo) deleteVolume(v *volume) (string, error) {
	ctx, cancel := d.ctx()
	defer cancel()
	if _, err := d.ctrl.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: v.id}); err != nil {
		return "", err
	}
	img := filepath.Join(d.work, "rds", "storage-pool", "metal-csi", v.id+".img")
	if _, err := os.Stat(img); !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("the volume's file %s is still on the RDS", img)
	}
	return "disk and its file removed from the RDS", nil
}

const message = "hello from rds-csi\n"

func (d *demo) lifecycle() error {
	var vol, restored *volume
	var snapID string
	steps := []struct {
		what string
		f    func() (string, error)
	}{
		{"CreateVolume 320 MiB xfs", func() (s string, err error) { vol, s, err = d.create("pvc-demo-volume", 320*mib, nil); return }},
		{"attach it to the node", func() (string, error) { return d.attach(vol) }},
		{"write a file through the mount", func() (string, error) {
			p := filepath.Join(vol.target, "hello.txt")
			if err := os.WriteFile(p, []byte(message), 0o644); err != nil {
				return "", err
			}
			return p, syncPath(p)
		}},
		{"expand to 512 MiB while in use", func() (string, error) {
			ctx, cancel := d.ctx()
			defer cancel()
			c, err := d.ctrl.ControllerExpandVolume(ctx, &csi.ControllerExpandVolumeRequest{VolumeId: vol.id,
				CapacityRange: &csi.CapacityRange{RequiredBytes: 512 * mib}, VolumeCapability: fsCap()})
			if err != nil {
				return "", err
			}
			n, err := d.node.NodeExpandVolume(ctx, &csi.NodeExpandVolumeRequest{VolumeId: vol.id, VolumePath: vol.target,
				StagingTargetPath: vol.staging, CapacityRange: &csi.CapacityRange{RequiredBytes: 512 * mib}, VolumeCapability: fsCap()})
			if err != nil {
				return "", err
			}
			st, err := d.node.NodeGetVolumeStats(ctx, &csi.NodeGetVolumeStatsRequest{VolumeId: vol.id, VolumePath: vol.target})
			if err != nil {
				return "", err
			}
			total := int64(0)
			for _, u := range st.Usage {
				if u.Unit == csi.VolumeUsage_BYTES {
					total = u.Total
				}
			}
			return fmt.Sprintf("RDS %d MiB, node %d MiB, filesystem now %d MiB", c.CapacityBytes/mib, n.CapacityBytes/mib, total/mib), nil
		}},
	}
	if d.snapshots {
		steps = append(steps, []struct {
			what string
			f    func() (string, error)
		}{
			{"CreateSnapshot (a copy of the volume file)", func() (string, error) {
				ctx, cancel := d.ctx()
				defer cancel()
				for {
					s, err := d.ctrl.CreateSnapshot(ctx, &csi.CreateSnapshotRequest{Name: "snapshot-demo", SourceVolumeId: vol.id})
					if err != nil {
						return "", err
					}
					snapID = s.Snapshot.SnapshotId
					if s.Snapshot.ReadyToUse {
						return fmt.Sprintf("%s, %d MiB, ready", snapID, s.Snapshot.SizeBytes/mib), nil
					}
					time.Sleep(200 * time.Millisecond)
				}
			}},
			{"restore it into a new volume", func() (s string, err error) {
				src := &csi.VolumeContentSource{Type: &csi.VolumeContentSource_Snapshot{Snapshot: &csi.VolumeContentSource_SnapshotSource{SnapshotId: snapID}}}
				restored, s, err = d.create("pvc-demo-restored", 512*mib, src)
				return
			}},
			{"attach the restored volume", func() (string, error) { return d.attach(restored) }},
			{"read the file back from the restore", func() (string, error) {
				b, err := os.ReadFile(filepath.Join(restored.target, "hello.txt"))
				if err != nil {
					return "", err
				}
				if string(b) != message {
					return "", fmt.Errorf("restored file holds %q", b)
				}
				return fmt.Sprintf("%q: the data came through the snapshot", strings.TrimSpace(string(b))), nil
			}},
			{"detach the restored volume", func() (string, error) { return d.detach(restored) }},
			{"DeleteVolume (restored)", func() (string, error) { return d.deleteVolume(restored) }},
			{"DeleteSnapshot", func() (string, error) {
				ctx, cancel := d.ctx()
				defer cancel()
				_, err := d.ctrl.DeleteSnapshot(ctx, &csi.DeleteSnapshotRequest{SnapshotId: snapID})
				return "snapshot file removed", err
			}},
		}...)
	}
	steps = append(steps, []struct {
		what string
		f    func() (string, error)
	}{
		{"detach the volume", func() (string, error) { return d.detach(vol) }},
		{"DeleteVolume", func() (string, error) { return d.deleteVolume(vol) }},
	}...)
	for _, s := range steps {
		if err := d.step(s.what, s.f); err != nil {
			return err
		}
	}
	if !d.snapshots {
		return errors.New("the driver does not advertise snapshots, so snapshot and restore were not shown")
	}
	return nil
}

// syncPath flushes a file so the data is on the volume, not only in the page cache.
func syncPath(p string) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}
