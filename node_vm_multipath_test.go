//go:build vmtest

// NVMe/TCP multipath over the real kernel: nvmet exports each volume on two addresses
// (127.0.0.1 and 127.0.0.2, the same port, as an RDS with two storage networks would), the
// node connects one controller per path and the kernel's multipath head is the disk.

package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"srvlab.io/rds-csi/internal/vmsys"
	"srvlab.io/rds-csi/nvme"
)

// The two paths: nvmet ports 5 and 6, both on TCP port 4424. Port 7 carries the unmanaged
// subsystem (a diskless node's /var), which no step may touch.
const (
	mpPath1, mpPath2 = "127.0.0.1", "127.0.0.2"
	mpPort           = 4424
	mpNvmet1         = "5"
	mpNvmet2         = "6"
	mpVarNQN         = "nqn.2024-01.io.nixos:var"
)

// exportTwoPaths exports a namespace on both paths and returns its volume, with the
// two-path volume context the controller writes.
func (vm *vmNode) exportTwoPaths(t *testing.T, name, size string) *volume {
	t.Helper()
	vmShell(t, "nvmet-port-add", mpNvmet1, mpPath1, fmt.Sprint(mpPort))
	vmShell(t, "nvmet-port-add", mpNvmet2, mpPath2, fmt.Sprint(mpPort))
	v := vm.export(t, name, size, 5)
	link := "/sys/kernel/config/nvmet/ports/" + mpNvmet2 + "/subsystems/" + v.nqn
	if _, err := os.Lstat(link); err != nil {
		must(t, os.Symlink("/sys/kernel/config/nvmet/subsystems/"+v.nqn, link))
	}
	v.vc[paramNVMeAddress] = mpPath1
	v.vc[paramNVMeAddresses] = mpPath1 + "," + mpPath2
	v.vc[paramNVMePort] = fmt.Sprint(mpPort)
	v.vc[paramReconnectDelay] = "1"
	return v
}

// unmanagedVar connects the unmanaged /var subsystem (once) with a host of its own prefix,
// and returns a check that it is still connected through the same live controller and
// readable.
func (vm *vmNode) unmanagedVar(t *testing.T) func(t *testing.T) {
	t.Helper()
	if vm.checkVar != nil {
		return vm.checkVar
	}
	vmShell(t, "nvmet-port-add", "7", "127.0.0.1", "4426")
	if _, err := os.Stat("/sys/kernel/config/nvmet/subsystems/" + mpVarNQN); err != nil {
		vmShell(t, "nvmet-export", mpVarNQN, vmBacking(mpVarNQN), "16M", "1", "7")
	}
	guard, err := nvme.NewGuard("nqn.2024-01.io.nixos:va") // a host of its own: the node's guard refuses it
	must(t, err)
	h, err := nvme.NewHost(nvme.Config{Guard: guard, HostDir: vm.n.cfg.NVMeHostDir, Logger: testLogger(t)})
	must(t, err)
	d, err := h.Connect(nodeCtx(t), nvme.Target{Address: "127.0.0.1", Port: 4426, NQN: mpVarNQN}, nvme.Options{})
	must(t, err)
	ctrl := d.Controllers[0].Name
	vm.checkVar = func(t *testing.T) {
		t.Helper()
		got, err := h.Resolve(mpVarNQN, 1)
		if err != nil || got.Name != d.Name || len(got.Controllers) != 1 || got.Controllers[0].Name != ctrl || !got.Controllers[0].Live() {
			t.Fatalf("the unmanaged /var subsystem changed: %+v, %v (was %s on %s)", got, err, d.Name, ctrl)
		}
		f, err := os.Open(d.DevPath)
		must(t, err)
		defer f.Close()
		if _, err := f.ReadAt(make([]byte, 4096), 0); err != nil {
			t.Fatalf("the unmanaged /var disk cannot be read: %v", err)
		}
	}
	return vm.checkVar
}

// pathControllers lists the controllers of nqn per address, straight from sysfs.
func pathControllers(nqn string) map[string][]string {
	out := map[string][]string{}
	for _, c := range vmsys.ControllersOf(nqn) {
		out[c.Traddr()] = append(out[c.Traddr()], c.Name)
	}
	return out
}

// writerState is an application writing and fsyncing 64 KiB every 10 ms, round-robin over
// 32 slots; it keeps the longest write+fsync.
type writerState struct {
	mu      sync.Mutex
	n       int
	err     error
	longest time.Duration
	expect  []byte
	stop    chan struct{}
	done    chan struct{}
}

func startTimedWriter(t *testing.T, path string) *writerState {
	const chunk, slots = 64 << 10, 32
	w := &writerState{expect: make([]byte, chunk*slots), stop: make(chan struct{}), done: make(chan struct{})}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	must(t, err)
	go func() {
		defer close(w.done)
		defer f.Close()
		for i := 0; ; i++ {
			select {
			case <-w.stop:
				return
			default:
			}
			data := pattern(fmt.Sprint(path, i), chunk)
			off := (i % slots) * chunk
			start := time.Now()
			_, err := f.WriteAt(data, int64(off))
			if err == nil {
				err = f.Sync()
			}
			took := time.Since(start)
			w.mu.Lock()
			w.longest = max(w.longest, took)
			if err != nil {
				w.err = fmt.Errorf("write %d: %w", i, err)
				w.mu.Unlock()
				return
			}
			copy(w.expect[off:], data)
			w.n++
			w.mu.Unlock()
			time.Sleep(10 * time.Millisecond)
		}
	}()
	t.Cleanup(func() {
		select {
		case <-w.stop:
		default:
			close(w.stop)
		}
		<-w.done
	})
	return w
}

// window returns the writes so far and the longest one since the last call, and resets it.
func (w *writerState) window() (int, time.Duration, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	l := w.longest
	w.longest = 0
	return w.n, l, w.err
}

// finish stops the writer within d and returns what the file must hold.
func (w *writerState) finish(t *testing.T, d time.Duration) []byte {
	t.Helper()
	close(w.stop)
	select {
	case <-w.done:
	case <-time.After(d):
		t.Fatalf("the writer is still blocked %v after the paths came back", d)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		t.Fatalf("the writer failed after %d writes: %v", w.n, w.err)
	}
	return w.expect[:min(w.n, 32)*(64<<10)]
}

// waitHealth polls the volume's health until want says yes, and returns the entries
// as "STATUS Reason: message".
func (vm *vmNode) waitHealth(t *testing.T, v *volume, d time.Duration, what string, want func([]string) bool) []string {
	t.Helper()
	var got []string
	if nodeWaitFor(d, func() bool {
		got = got[:0]
		for _, e := range vm.health(t, v) {
			got = append(got, fmt.Sprintf("%s %s: %s", e.GetStatus(), e.GetReason(), e.GetMessage()))
		}
		return want(got)
	}) {
		return got
	}
	t.Fatalf("volume health is not %s within %v: %q", what, d, got)
	return nil
}

func healthNormal(got []string) bool { return len(got) == 0 }

func healthDegraded(msg string) func([]string) bool {
	return func(got []string) bool {
		return len(got) == 1 && strings.HasPrefix(got[0], "DEGRADED "+nodeHealthPathDown+": "+msg)
	}
}

func healthAbnormal(got []string) bool {
	for _, g := range got {
		if strings.HasPrefix(g, "INACCESSIBLE ") {
			return true
		}
	}
	return false
}

// multipathFailover: a writer keeps writing, with no error and no long wait, while each
// path in turn goes down and comes back; both down stops I/O (abnormal) until they return,
// and every byte written is there. The longest write+fsync while one path was down is the
// figure for the bench report.
func (vm *vmNode) multipathFailover(t *testing.T) {
	checkVar := vm.unmanagedVar(t)
	v := vm.exportTwoPaths(t, "vmmp", "128M")
	must(t, vm.stage(t, v))
	if pc := pathControllers(v.nqn); len(pc[mpPath1]) != 1 || len(pc[mpPath2]) != 1 {
		t.Fatalf("controllers per path after stage: %v, want one on each", pc)
	}
	target := vm.target(t, "mp")
	must(t, vm.publish(t, v, target))
	vm.waitHealth(t, v, 10*time.Second, "normal", healthNormal)
	staged := mountsAt(t, v.staging)[0]
	w := startTimedWriter(t, filepath.Join(target, "data.bin"))
	time.Sleep(time.Second)
	w.window()

	var worst time.Duration
	for _, p := range []struct{ nvmet, addr string }{{mpNvmet1, mpPath1}, {mpNvmet2, mpPath2}} {
		before, _, _ := w.window()
		vmShell(t, "nvmet-port-down", p.nvmet)
		down := time.Now()
		got := vm.waitHealth(t, v, 15*time.Second, "degraded", healthDegraded(fmt.Sprintf("degraded: 1 of 2 paths live (%s reconnecting)", p.addr)))
		t.Logf("path %s down: condition %q after %v", p.addr, got, time.Since(down).Round(time.Millisecond))
		time.Sleep(2 * time.Second) // keep writing on the other path
		during, longest, err := w.window()
		if err != nil || during-before < 20 {
			t.Fatalf("with path %s down the writer wrote %d chunks (error %v): it must keep writing on the other path", p.addr, during-before, err)
		}
		vmShell(t, "nvmet-port-up", p.nvmet)
		vm.waitHealth(t, v, 20*time.Second, "normal again", healthNormal)
		_, l2, _ := w.window()
		longest = max(longest, l2)
		t.Logf("path %s down and back: %d writes while it was down, the longest write+fsync %v", p.addr, during-before, longest.Round(time.Millisecond))
		worst = max(worst, longest)
	}
	t.Logf("BENCH multipath failover: longest write+fsync while a path went down and came back: %v", worst.Round(time.Millisecond))
	if worst > 5*time.Second {
		t.Fatalf("a write waited %v during a path failover: the other path must carry I/O within seconds", worst)
	}

	vmShell(t, "nvmet-port-down", mpNvmet1)
	vmShell(t, "nvmet-port-down", mpNvmet2)
	got := vm.waitHealth(t, v, 15*time.Second, "abnormal", healthAbnormal)
	t.Logf("both paths down: %q", got)
	vmShell(t, "nvmet-port-up", mpNvmet1)
	vmShell(t, "nvmet-port-up", mpNvmet2)
	vm.waitHealth(t, v, 30*time.Second, "normal after both paths returned", healthNormal)
	want := w.finish(t, 30*time.Second)
	checkData(t, filepath.Join(target, "data.bin"), want, 0)
	if now := mountsAt(t, v.staging)[0]; now.Major != staged.Major || now.Minor != staged.Minor {
		t.Fatalf("the staging mount moved from %d:%d to %d:%d: path failures must not change the disk", staged.Major, staged.Minor, now.Major, now.Minor)
	}
	checkVar(t)

	must(t, vm.unpublish(t, v, target))
	must(t, vm.unstage(t, v))
	if c := vmsys.ControllerNames(v.nqn); len(c) != 0 {
		t.Fatalf("controllers left after unstage: %v", c)
	}
	checkVar(t)
}

// multipathPathLost: with a finite ctrlLossTmo the kernel removes path 1's controller
// while path 2 carries the volume; once path 1 answers again the watcher connects it
// again, with no RPC, without touching path 2 or the mount.
func (vm *vmNode) multipathPathLost(t *testing.T) {
	checkVar := vm.unmanagedVar(t)
	v := vm.exportTwoPaths(t, "vmmplost", "64M")
	v.vc[paramCtrlLossTmo] = "2"
	must(t, vm.stage(t, v))
	target := vm.target(t, "mplost")
	must(t, vm.publish(t, v, target))
	staged := mountsAt(t, v.staging)[0]
	path2 := pathControllers(v.nqn)[mpPath2]
	w := startTimedWriter(t, filepath.Join(target, "data.bin"))

	vmShell(t, "nvmet-port-down", mpNvmet1)
	if !nodeWaitFor(30*time.Second, func() bool { return len(pathControllers(v.nqn)[mpPath1]) == 0 }) {
		vmShell(t, "nvmet-port-up", mpNvmet1)
		t.Fatalf("the kernel kept path 1's controller 30s with ctrl_loss_tmo=2: %v", pathControllers(v.nqn))
	}
	got := vm.waitHealth(t, v, 10*time.Second, "degraded with path 1 not connected", healthDegraded("degraded: 1 of 2 paths live ("+mpPath1+" not connected"))
	t.Logf("path 1 given up by the kernel: %q", got)
	vmShell(t, "nvmet-port-up", mpNvmet1)
	up := time.Now()
	if !nodeWaitFor(20*time.Second, func() bool { return len(pathControllers(v.nqn)[mpPath1]) == 1 }) {
		t.Fatalf("the watcher did not reconnect path 1 within 20s of it answering: %v", pathControllers(v.nqn))
	}
	t.Logf("path 1 reconnected by the watcher %v after it answered again", time.Since(up).Round(time.Millisecond))
	vm.waitHealth(t, v, 10*time.Second, "normal", healthNormal)
	if now := pathControllers(v.nqn)[mpPath2]; len(now) != 1 || now[0] != path2[0] {
		t.Fatalf("path 2's controller changed from %v to %v: reconnecting path 1 must not touch it", path2, now)
	}
	if now := mountsAt(t, v.staging)[0]; now.Major != staged.Major || now.Minor != staged.Minor {
		t.Fatalf("the staging mount moved from %d:%d to %d:%d", staged.Major, staged.Minor, now.Major, now.Minor)
	}
	checkData(t, filepath.Join(target, "data.bin"), w.finish(t, 10*time.Second), 0)
	must(t, vm.unpublish(t, v, target))
	must(t, vm.unstage(t, v))
	if c := vmsys.ControllerNames(v.nqn); len(c) != 0 {
		t.Fatalf("controllers left after unstage: %v", c)
	}
	checkVar(t)
}

// TestNodeVMMultipathOff runs in a boot with nvme_core.multipath=N: a two-path volume
// connects one path only (two would be two disks of one volume), says so in its
// condition, works, and unstages completely.
func TestNodeVMMultipathOff(t *testing.T) {
	vm := newVMNode(t)
	if mp := vmsys.Attr("/sys/module/nvme_core/parameters/multipath"); mp != "N" {
		t.Fatalf("nvme_core.multipath = %s: this test needs a boot with nvme_core.multipath=N", mp)
	}
	checkVar := vm.unmanagedVar(t)
	v := vm.exportTwoPaths(t, "vmmpoff", "64M")
	must(t, vm.stage(t, v))
	if pc := pathControllers(v.nqn); len(pc[mpPath1]) != 1 || len(pc[mpPath2]) != 0 {
		t.Fatalf("controllers per path: %v, want path 1 only", pc)
	}
	got := vm.waitHealth(t, v, 5*time.Second, "the multipath-off warning", func(got []string) bool {
		return len(got) == 1 && strings.HasPrefix(got[0], "DEGRADED "+nodeHealthMultipathOff+": native NVMe multipath is off on this node (nvme_core.multipath=N), so the volume uses one of its 2 paths ("+mpPath1+")")
	})
	t.Logf("condition: %q", got)
	target := vm.target(t, "mpoff")
	must(t, vm.publish(t, v, target))
	data := pattern("vm-mpoff", 1<<20)
	writeSync(t, filepath.Join(target, "f.bin"), data, 0)
	must(t, vm.stage(t, v)) // a restage keeps to the path in use
	if pc := pathControllers(v.nqn); len(pc[mpPath1]) != 1 || len(pc[mpPath2]) != 0 {
		t.Fatalf("controllers per path after a restage: %v, want path 1 only", pc)
	}
	checkData(t, filepath.Join(target, "f.bin"), data, 0)
	must(t, vm.unpublish(t, v, target))
	must(t, vm.unstage(t, v))
	if c := vmsys.ControllerNames(v.nqn); len(c) != 0 {
		t.Fatalf("controllers left after unstage: %v", c)
	}
	checkVar(t)
}
