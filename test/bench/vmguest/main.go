// Command vmguest measures the node plugin's recovery figures on a real kernel. It runs
// inside the test VM (test/vm/run-in-vm.sh, started by `go run ./test/bench -vm`) as root,
// next to static rds-csi and rds-sim binaries: the simulator exports its disks through the
// kernel NVMe target (rds-sim --nvmet), rds-csi --mode=all serves controller and node, and
// the volumes are attached over real NVMe/TCP on 127.0.0.1.
//
// It prints one line per figure, "BENCH-FIGURE <json>", which the harness reads:
//
//   - target back: a volume (ctrlLossTmo -1, reconnectDelay 2) loses its target for
//     longer than reconnect_delay; from the moment the target is back, how long until
//     NodeGetVolumeHealth reports the volume healthy again (polled every 20 ms, as a
//     health monitor would, only from that moment on);
//   - ctrl_loss healed: a volume (ctrlLossTmo 3, reconnectDelay 1) loses its target until
//     the kernel gives the controller up; from the moment the target is back, how long
//     until the node has reconnected and replaced both mounts (staging and publish) by
//     itself — observed in sysfs and mountinfo only, no RPC that could prompt it;
//   - multipath failover: a two-path volume (the simulator listens on 127.0.0.1 and
//     127.0.0.2) with a writer that writes and fsyncs 64 KiB every 10 ms; each path in turn
//     goes down for 3 s and comes back; the longest write+fsync.
//
// Each scenario runs several times; the figure is the slowest run.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"srvlab.io/rds-csi/internal/vmsys"
	"srvlab.io/rds-csi/test/bench/internal/child"
	"srvlab.io/rds-csi/test/internal/nvmet"
)

const (
	managedPrefix = "nqn.2000-02.com.mikrotik:pvc-"
	simListen     = "127.0.0.1:2222"
	// work is on /srv/nvmet (ext4 on a RAM-backed loop device): nvmet's file backend
	// needs O_DIRECT, which tmpfs lacks.
	work = "/srv/nvmet/bench"
)

// result is one figure as the harness reads it: a value in seconds, or why there is none.
type result struct {
	Key    string   `json:"key"`
	Value  *float64 `json:"value,omitempty"`
	Reason string   `json:"reason,omitempty"`
	Detail string   `json:"detail,omitempty"`
}

func emit(r result) {
	b, _ := json.Marshal(r)
	fmt.Printf("BENCH-FIGURE %s\n", b)
}

func main() {
	csiBin := flag.String("csi", "./rds-csi", "static rds-csi binary")
	simBin := flag.String("sim", "./rds-sim", "static rds-sim binary")
	trials := flag.Int("trials", 3, "runs of each scenario")
	flag.Parse()
	keys := []string{"vm_target_back_normal", "vm_ctrl_loss_healed", "vm_multipath_failover_write"}
	s, err := setUp(*csiBin, *simBin)
	if err != nil {
		for _, k := range keys {
			emit(result{Key: k, Reason: "set-up in the VM: " + err.Error()})
		}
		s.tearDown()
		os.Exit(1)
	}
	emit(s.targetBack(*trials))
	emit(s.ctrlLossHealed(*trials))
	emit(s.multipathFailover(*trials))
	s.tearDown()
}

// system is the simulator and the driver running in the VM.
type system struct {
	sim, drv *child.Process
	client   *client
}

func setUp(csiBin, simBin string) (*system, error) {
	s := &system{}
	if err := os.MkdirAll(work, 0o755); err != nil {
		return s, err
	}
	k, err := writeKeys(filepath.Join(work, "keys"))
	if err != nil {
		return s, err
	}
	hostDir := filepath.Join(work, "nvme")
	if err := writeIdentity(hostDir); err != nil {
		return s, err
	}
	s.sim, err = child.Start("rds-sim", filepath.Join(work, "rds-sim.log"), simBin, []string{"--listen", simListen, "--dir", filepath.Join(work, "rds"), "--nvmet", "--nvme-address", path1 + "," + path2,
		"--host-key", k.hostKey, "--authorized-keys", k.authorized}, nil)
	if err != nil {
		return s, err
	}
	if err := s.sim.WaitLine("rds-sim: listening on", 20*time.Second); err != nil {
		return s, err
	}
	socket := filepath.Join(work, "csi.sock")
	s.drv, err = child.Start("rds-csi", filepath.Join(work, "rds-csi.log"), csiBin, []string{
		"--mode=all", "--endpoint=unix://" + socket, "--node-id=" + nodeID, "--metrics-address=",
		"--managed-nqn-prefix=" + managedPrefix, "--nvme-host-dir=" + hostDir, "--state-dir=" + filepath.Join(work, "state"),
		"--rds-address=127.0.0.1", "--rds-ssh-port=2222", "--rds-user=admin",
		"--rds-key-file=" + k.clientKey, "--rds-known-hosts=" + k.knownHosts}, nil)
	if err != nil {
		return s, err
	}
	if s.client, err = dial(socket); err != nil {
		return s, err
	}
	return s, child.WaitReady(s.drv, s.client.ident, 30*time.Second)
}

func (s *system) tearDown() {
	if s.client != nil {
		s.client.close()
	}
	if s.drv != nil {
		if err := s.drv.Stop(30 * time.Second); err != nil {
			fmt.Println("vmguest:", err)
		}
	}
	if s.sim != nil {
		if err := s.sim.Stop(10 * time.Second); err != nil {
			fmt.Println("vmguest:", err)
		}
	}
}

// failed prints the logs' tails and returns the figure as not measured.
func (s *system) failed(key string, err error) result {
	fmt.Printf("vmguest: %s: %v\n--- rds-csi log (tail) ---\n%s\n--- rds-sim log (tail) ---\n%s\n", key, err, s.drv.Tail(40, "\n"), s.sim.Tail(10, "\n"))
	return result{Key: key, Reason: err.Error()}
}

const reconnectDelay = 2

// The simulator's two NVMe/TCP addresses, as an RDS with a storage port on two networks.
const path1, path2 = "127.0.0.1", "127.0.0.2"

// trial is one run of a scenario on its volume: the time measured and a note for the
// detail.
type trial func(run int, v *volume) (took time.Duration, note string, err error)

// scenario creates an ext4 volume with the parameters, attaches it (controller publish,
// stage, publish), runs the trial the given number of times and deletes the volume.
func (s *system) scenario(key string, params map[string]string, trials int, t trial) (runs []time.Duration, notes []string, failed *result) {
	fail := func(err error) ([]time.Duration, []string, *result) {
		r := s.failed(key, err)
		return nil, nil, &r
	}
	v, err := s.client.createVolume(params)
	if err != nil {
		return fail(err)
	}
	defer s.client.remove(v)
	if err := s.client.attach(v); err != nil {
		return fail(err)
	}
	for i := range trials {
		took, note, err := t(i+1, v)
		if err != nil {
			return fail(fmt.Errorf("run %d: %w", i+1, err))
		}
		runs, notes = append(runs, took), append(notes, note)
	}
	return runs, notes, nil
}

// takeDown removes the volume's target (its nvmet port link) and returns how to bring it
// back.
func takeDown(v *volume) (up func() error, err error) {
	port, err := nvmet.PortOf(v.nqn, "")
	if err != nil {
		return nil, err
	}
	if err := portDown(port, v.nqn); err != nil {
		return nil, err
	}
	return func() error { return portUp(port, v.nqn) }, nil
}

// targetBack: the target goes away for 2 × reconnect_delay + 1 s with ctrl_loss_tmo off
// (the default: the kernel queues I/O and keeps reconnecting); measured from the target's
// return until NodeGetVolumeHealth is empty again.
func (s *system) targetBack(trials int) result {
	const key = "vm_target_back_normal"
	away := (2*reconnectDelay + 1) * time.Second
	runs, _, failed := s.scenario(key, map[string]string{"reconnectDelay": fmt.Sprint(reconnectDelay)}, trials, func(_ int, v *volume) (time.Duration, string, error) {
		if err := s.client.waitHealthy(v, true, 20*time.Second); err != nil {
			return 0, "", fmt.Errorf("before the outage: %w", err)
		}
		down := time.Now()
		up, err := takeDown(v)
		if err != nil {
			return 0, "", err
		}
		if err := s.client.waitHealthy(v, false, 15*time.Second); err != nil {
			return 0, "", errors.Join(fmt.Errorf("the node never reported the volume unhealthy: %w", err), up())
		}
		time.Sleep(time.Until(down.Add(away)))
		if err := up(); err != nil {
			return 0, "", err
		}
		back := time.Now()
		if err := s.client.waitHealthy(v, true, 30*time.Second); err != nil {
			return 0, "", fmt.Errorf("after the outage: %w", err)
		}
		took := time.Since(back)
		if err := writeSync(filepath.Join(v.target, "after-outage"), []byte("ok\n")); err != nil {
			return 0, "", fmt.Errorf("write after the outage: %w", err)
		}
		return took, "", nil
	})
	if failed != nil {
		return *failed
	}
	return measured(key, runs, fmt.Sprintf("ctrlLossTmo -1, reconnectDelay %ds (target = reconnect_delay + 1 s), target away %v; "+
		"time from the target's return until NodeGetVolumeHealth is empty, polled every 20 ms; then a synced write on the volume", reconnectDelay, away))
}

// ctrlLossHealed: the target stays away until the kernel gives the controller up
// (ctrl_loss_tmo 3), then comes back; measured until the node has a live disk again and
// both the staging mount and the publish bind mount are new mounts of it.
func (s *system) ctrlLossHealed(trials int) result {
	const key = "vm_ctrl_loss_healed"
	runs, notes, failed := s.scenario(key, map[string]string{"ctrlLossTmo": "3", "reconnectDelay": "1"}, trials, func(run int, v *volume) (time.Duration, string, error) {
		before, err := mountsOf(v)
		if err != nil {
			return 0, "", fmt.Errorf("before the loss: %w", err)
		}
		data := []byte(fmt.Sprintf("written before loss %d\n", run))
		if err := writeSync(filepath.Join(v.target, "before-loss"), data); err != nil {
			return 0, "", err
		}
		down := time.Now()
		up, err := takeDown(v)
		if err != nil {
			return 0, "", err
		}
		if !waitFor(30*time.Second, 10*time.Millisecond, func() bool { return len(vmsys.ControllersOf(v.nqn)) == 0 }) {
			return 0, "", errors.Join(errors.New("the kernel kept the controller 30 s after ctrl_loss_tmo=3"), up())
		}
		lost := time.Since(down)
		if err := up(); err != nil {
			return 0, "", err
		}
		back := time.Now()
		var after volumeMounts
		if !waitFor(60*time.Second, 5*time.Millisecond, func() bool {
			m, err := mountsOf(v)
			after = m
			return err == nil && m.healedFrom(before)
		}) {
			return 0, "", fmt.Errorf("not healed 60 s after the target came back: before %+v, now %+v", before, after)
		}
		took := time.Since(back)
		if got, err := os.ReadFile(filepath.Join(v.target, "before-loss")); err != nil || string(got) != string(data) {
			return 0, "", fmt.Errorf("after healing the volume reads %q, %v; want %q", got, err, data)
		}
		if err := writeSync(filepath.Join(v.target, "after-heal"), []byte("ok\n")); err != nil {
			return 0, "", fmt.Errorf("write after healing: %w", err)
		}
		return took, fmt.Sprintf("run %d: %s→%s, controller dropped %v after the target went, %s", run, before.disk, after.disk,
			lost.Round(100*time.Millisecond), s.healAttempts(v, down, back)), nil
	})
	if failed != nil {
		return *failed
	}
	return measured(key, runs, fmt.Sprintf("ctrlLossTmo 3, reconnectDelay 1, rds-csi's default --heal-interval; target away until the kernel dropped the controller, "+
		"then the time from its return until a live disk is mounted anew at the staging and publish paths (mountinfo and sysfs polled every 5 ms, no RPC); "+
		"data written before the loss read back; %s", strings.Join(notes, "; ")))
}

// multipathFailover: a writer runs on a two-path volume while path 1, then path 2, goes
// down for 3 s and comes back (the volume healthy again before the next); the longest
// write+fsync over the whole run.
func (s *system) multipathFailover(trials int) result {
	const key = "vm_multipath_failover_write"
	params := map[string]string{"nvmeAddresses": path1 + "," + path2, "reconnectDelay": "1"}
	runs, notes, failed := s.scenario(key, params, trials, func(run int, v *volume) (time.Duration, string, error) {
		if err := s.client.waitHealthy(v, true, 20*time.Second); err != nil {
			return 0, "", fmt.Errorf("before the failover: %w", err)
		}
		w := startWriter(filepath.Join(v.target, "failover.bin"))
		defer w.stop()
		time.Sleep(time.Second)
		var during []string
		for _, addr := range []string{path1, path2} {
			port, err := nvmet.PortOf(v.nqn, addr)
			if err != nil {
				return 0, "", err
			}
			before := w.count()
			if err := portDown(port, v.nqn); err != nil {
				return 0, "", err
			}
			time.Sleep(3 * time.Second)
			n := w.count() - before
			if err := portUp(port, v.nqn); err != nil {
				return 0, "", err
			}
			if err := s.client.waitHealthy(v, true, 30*time.Second); err != nil {
				return 0, "", fmt.Errorf("after path %s came back: %w", addr, err)
			}
			if n < 30 {
				return 0, "", fmt.Errorf("with path %s down the writer made %d writes in 3 s: it must go on through the other path", addr, n)
			}
			during = append(during, fmt.Sprintf("%d writes with %s down", n, addr))
		}
		longest, err := w.stop()
		if err != nil {
			return 0, "", fmt.Errorf("the writer failed: %w", err)
		}
		return longest, fmt.Sprintf("run %d: %s", run, strings.Join(during, ", ")), nil
	})
	if failed != nil {
		return *failed
	}
	return measured(key, runs, "two paths (nvmeAddresses 127.0.0.1,127.0.0.2, reconnectDelay 1) over nvmet; 64 KiB write + fsync every 10 ms on ext4; "+
		"path 1 then path 2 taken down for 3 s at the target (its nvmet port link removed: the node sees the connection drop at once, not a silent loss) and back, "+
		"healthy again between; the longest write+fsync of the whole run; "+strings.Join(notes, "; "))
}

// healAttempts describes the node's reconnect attempts (heal passes) around the target's
// return at up, from its log.
func (s *system) healAttempts(v *volume, down, up time.Time) string {
	attempts := logEvents(s.drv.LogPath, "reconnecting a lost volume", v.id, down)
	var rel []string
	for _, t := range attempts {
		rel = append(rel, fmt.Sprintf("%+.2fs", t.Sub(up).Seconds()))
	}
	if len(rel) == 0 {
		return "no reconnect attempt logged"
	}
	return "reconnect attempts at " + strings.Join(rel, " ") + " from the target's return"
}

// measured makes the figure of the runs: the slowest, in seconds, with every run listed.
func measured(key string, runs []time.Duration, detail string) result {
	if len(runs) == 0 {
		return result{Key: key, Reason: "no run completed"}
	}
	worst := slices.Max(runs)
	v := worst.Seconds()
	var each []string
	for _, r := range runs {
		each = append(each, r.Round(time.Millisecond).String())
	}
	return result{Key: key, Value: &v, Detail: fmt.Sprintf("slowest of %d runs (%s); %s", len(runs), strings.Join(each, ", "), detail)}
}

// waitFor polls cond every step until it holds or d has passed.
func waitFor(d, step time.Duration, cond func() bool) bool {
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		if cond() {
			return true
		}
		time.Sleep(step)
	}
	return cond()
}

func writeSync(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	return errors.Join(err, f.Close())
}

// rpcContext bounds every call as kubelet does.
func rpcContext() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 2*time.Minute)
}
