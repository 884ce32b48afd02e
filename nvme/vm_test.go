//go:build vmtest

// Real-kernel tests: they run only inside the test VM (test/vm/run-nvme-tests.sh), where
// the kernel's nvmet target exports file-backed namespaces on 127.0.0.1 and this package
// connects to them through the real /dev/nvme-fabrics.

package nvme

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"srvlab.io/rds-csi/internal/vmsys"
)

func TestVM(t *testing.T) {
	requireVM(t)
	for _, e := range []struct {
		nqn        string
		size       string
		nsid, port int
	}{
		{vmPVC1, "64M", 1, 1}, {vmPVC10, "64M", 1, 1}, {vmPVC3, "16M", 1, 1}, {vmGrow, "32M", 1, 1},
		{vmMulti, "16M", 3, 1}, {vmMulti, "24M", 9, 1}, {vmPVC2, "64M", 1, 2},
	} {
		export(t, e.nqn, e.size, e.nsid, e.port)
	}
	h := newVMHost(t)
	t.Logf("host identity %+v", h.Identity())
	v := connectVar(t, h)
	ctx := context.Background()
	var d1 *Disk // pvc-1, mounted on /mnt/pvc-1 from "connect" on

	t.Run("probe", func(t *testing.T) {
		f, err := h.Probe()
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range []string{"hostnqn", "hostid", "ctrl_loss_tmo", "reconnect_delay", "keep_alive_tmo", "fast_io_fail_tmo", "nr_io_queues", "queue_size"} {
			if !f.Options[o] {
				t.Errorf("the kernel does not list %s: %v", o, f.Options)
			}
		}
	})

	if !t.Run("connect resolve mkfs mount", func(t *testing.T) {
		var marks []string
		var t0 time.Time
		defer traceConnect(h, func(stage string, at time.Time) {
			if stage == "write" {
				t0 = at
			}
			marks = append(marks, fmt.Sprintf("%s+%v", stage, at.Sub(t0).Round(10*time.Microsecond)))
		})()
		d, err := h.Connect(ctx, Target{Address: vmLocal, Port: port1, NQN: vmPVC1}, Options{ReconnectDelay: intp(1)})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("connected %s: disk %s %s %d:%d size %d, controllers %+v; trace %v", vmPVC1, d.Name, d.DevPath, d.Major, d.Minor, d.SizeBytes, d.Controllers, marks)
		var st unix.Stat_t
		if err := unix.Stat(d.DevPath, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFBLK || unix.Major(st.Rdev) != d.Major || unix.Minor(st.Rdev) != d.Minor {
			t.Fatalf("%s is not block device %d:%d: %v", d.DevPath, d.Major, d.Minor, err)
		}
		if d.SizeBytes != 64<<20 || d.NSID != 1 || d.NQN != vmPVC1 || len(d.Controllers) != 1 {
			t.Fatalf("disk %+v", d)
		}
		c := d.Controllers[0]
		if !c.Live() || c.Transport != "tcp" || c.HostNQN != h.Identity().HostNQN || c.TrSvcID != port1 || c.TrAddr != vmLocal {
			t.Fatalf("controller %+v", c)
		}
		if got := vmsys.Attr("/sys/class/nvme/" + c.Name + "/ctrl_loss_tmo"); got != "off" {
			t.Errorf("ctrl_loss_tmo = %s, want off (-1 is the driver's default)", got)
		}
		if got := vmsys.Attr("/sys/class/nvme/" + c.Name + "/reconnect_delay"); got != "1" {
			t.Errorf("reconnect_delay = %s, want 1", got)
		}
		if r, err := h.Resolve(vmPVC1, 1); err != nil || r.Name != d.Name || r.Major != d.Major {
			t.Fatalf("Resolve = %+v, %v", r, err)
		}
		mkfsMount(t, d.DevPath, "/mnt/pvc-1")
		if err := writeSync("/mnt/pvc-1/hello", []byte("hello\n")); err != nil {
			t.Fatal(err)
		}
		d1 = d
	}) {
		t.FailNow()
	}

	t.Run("pvc-1 and pvc-10 never alias", func(t *testing.T) {
		d10, err := h.Connect(ctx, Target{Address: vmLocal, NQN: vmPVC10}, Options{ReconnectDelay: intp(1)})
		if err != nil {
			t.Fatal(err)
		}
		if d10.Name == d1.Name || d10.NQN != vmPVC10 {
			t.Fatalf("pvc-10 resolved to %s (pvc-1 is %s)", d10.Name, d1.Name)
		}
		for nqn, want := range map[string]string{vmPVC1: d1.Name, vmPVC10: d10.Name} {
			if r, err := h.Resolve(nqn, 1); err != nil || r.Name != want {
				t.Errorf("Resolve(%s) = %+v, %v; want %s", nqn, r, err, want)
			}
		}
	})

	t.Run("nsid is not the head counter", func(t *testing.T) {
		d9, err := h.Connect(ctx, Target{Address: vmLocal, NQN: vmMulti, NSID: 9}, Options{ReconnectDelay: intp(1)})
		if err != nil {
			t.Fatal(err)
		}
		d3, err := h.Resolve(vmMulti, 3)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("nsid 3 -> %s, nsid 9 -> %s", d3.Name, d9.Name)
		if d9.SizeBytes != 24<<20 || d3.SizeBytes != 16<<20 || vmsys.Attr("/sys/block/"+d9.Name+"/nsid") != "9" || vmsys.Attr("/sys/block/"+d3.Name+"/nsid") != "3" {
			t.Fatalf("nsid 9 = %+v, nsid 3 = %+v", d9, d3)
		}
		if strings.HasSuffix(d9.Name, "n9") {
			t.Errorf("disk %s: the kernel named it after the nsid; this test assumes it does not", d9.Name)
		}
	})

	t.Run("EALREADY finds the existing controller", func(t *testing.T) {
		before := vmsys.ControllerNames(vmPVC1)
		opts, err := connectString(Target{Address: vmLocal, Port: port1, NQN: vmPVC1, NSID: 1}, h.Identity(), Options{ReconnectDelay: intp(1)}, Features{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := h.fab.connect(opts); !errors.Is(err, unix.EALREADY) {
			t.Fatalf("a duplicate raw connect = %v, want EALREADY from the kernel", err)
		}
		d, err := h.Connect(ctx, Target{Address: vmLocal, NQN: vmPVC1}, Options{ReconnectDelay: intp(1)})
		if err != nil || d.Name != d1.Name {
			t.Fatalf("Connect again = %+v, %v; want the existing disk %s", d, err, d1.Name)
		}
		if after := vmsys.ControllerNames(vmPVC1); fmt.Sprint(after) != fmt.Sprint(before) {
			t.Fatalf("controllers %v -> %v: a second controller was made", before, after)
		}
	})

	t.Run("target down and up: I/O continues", func(t *testing.T) {
		var (
			mu      sync.Mutex
			written int
			werr    error
		)
		stop := make(chan struct{})
		done := make(chan struct{})
		go func() { // a database that keeps writing and syncing through the outage
			defer close(done)
			f, err := os.OpenFile("/mnt/pvc-1/log", os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
			if err != nil {
				werr = err
				return
			}
			defer f.Close()
			block := bytes.Repeat([]byte("x"), 4096)
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := f.Write(block); err == nil {
					err = f.Sync()
				}
				mu.Lock()
				if err != nil {
					werr = err
				} else {
					written++
				}
				mu.Unlock()
				if err != nil {
					return
				}
				time.Sleep(20 * time.Millisecond)
			}
		}()
		time.Sleep(200 * time.Millisecond)
		sh(t, 10*time.Second, "nvmet-port-down", "1")
		down := time.Now()
		if !waitFor(5*time.Second, func() bool { hl, _ := h.Health(vmPVC1); return hl.Connected && !hl.Live }) {
			t.Fatal("the controller never left live after the target went down")
		}
		hl, _ := h.Health(vmPVC1)
		t.Logf("target down: health %+v", hl)
		time.Sleep(1500 * time.Millisecond)
		mu.Lock()
		duringOutage := written
		mu.Unlock()
		sh(t, 10*time.Second, "nvmet-port-up", "1")
		if !waitFor(10*time.Second, func() bool { hl, _ := h.Health(vmPVC1); return hl.Live }) {
			t.Fatal("the controller never came back live")
		}
		t.Logf("live again %v after the target went down", time.Since(down).Round(time.Millisecond))
		time.Sleep(300 * time.Millisecond)
		close(stop)
		<-done
		mu.Lock()
		defer mu.Unlock()
		if werr != nil {
			t.Fatalf("I/O failed across the outage: %v", werr)
		}
		if written <= duringOutage {
			t.Fatalf("no write completed after the target came back (%d before, %d after)", duringOutage, written)
		}
		fi, err := os.Stat("/mnt/pvc-1/log")
		if err != nil || fi.Size() != int64(written)*4096 {
			t.Fatalf("log size %v, %v; want %d", fi, err, written*4096)
		}
		if d, err := h.Resolve(vmPVC1, 1); err != nil || d.Name != d1.Name {
			t.Fatalf("after the outage Resolve = %+v, %v; want the same disk %s", d, err, d1.Name)
		}
		t.Logf("%d writes+fsyncs, %d of them before the target came back", written, duringOutage)
	})

	t.Run("ctrl_loss expiry then reconnect with new names", func(t *testing.T) { ctrlLossThenReconnect(t, h) })

	t.Run("rescan after the target grew", func(t *testing.T) {
		d, err := h.Connect(ctx, Target{Address: vmLocal, NQN: vmGrow}, Options{})
		if err != nil {
			t.Fatal(err)
		}
		if d.SizeBytes != 32<<20 {
			t.Fatalf("size %d, want 32 MiB", d.SizeBytes)
		}
		if err := os.Truncate(backingFile(vmGrow, 1), 48<<20); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile("/sys/kernel/config/nvmet/subsystems/"+vmGrow+"/namespaces/1/revalidate_size", []byte("1"), 0); err != nil {
			t.Fatal(err)
		}
		var got int64
		waitFor(5*time.Second, func() bool {
			d, err := h.Rescan(ctx, vmGrow, 1)
			if err == nil {
				got = d.SizeBytes
			}
			return got == 48<<20
		})
		if got != 48<<20 {
			t.Fatalf("size after rescan %d, want 48 MiB", got)
		}
		if err := h.Disconnect(ctx, vmGrow); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("errno mapping", func(t *testing.T) {
		for _, c := range []struct {
			target Target
			want   error
		}{
			{Target{Address: vmLocal, Port: 4499, NQN: vmPVC1}, ErrUnreachable},                     // ECONNREFUSED
			{Target{Address: vmLocal, Port: port1, NQN: vmPrefix + "unknown"}, ErrSubsystemUnknown}, // EIO
			{Target{Address: "10.255.255.1", Port: port1, NQN: vmPVC1}, ErrUnreachable},             // no route
			{Target{Address: vmLocal, Port: portVar, NQN: vmVar}, ErrNotManaged},
		} {
			start := time.Now()
			_, err := h.Connect(ctx, c.target, Options{})
			t.Logf("Connect %s:%d %s -> %v (%v)", c.target.Address, c.target.Port, c.target.NQN, err, time.Since(start).Round(time.Millisecond))
			if !errors.Is(err, c.want) {
				t.Errorf("Connect %+v = %v, want %v", c.target, err, c.want)
			}
		}
	})

	t.Run("connect deadline while the kernel waits", func(t *testing.T) {
		// A listener that accepts and never speaks NVMe/TCP: the kernel waits for the
		// ICResp (~10 s of its own), the driver's deadline returns first.
		ln, err := net.Listen("tcp", "127.0.0.1:4477")
		if err != nil {
			t.Fatal(err)
		}
		var conns []net.Conn
		var cmu sync.Mutex
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				cmu.Lock()
				conns = append(conns, c)
				cmu.Unlock()
			}
		}()
		cctx, cancel := context.WithTimeout(ctx, 700*time.Millisecond)
		start := time.Now()
		_, err = h.Connect(cctx, Target{Address: vmLocal, Port: 4477, NQN: vmPrefix + "silent"}, Options{})
		cancel()
		took := time.Since(start)
		if !errors.Is(err, ErrTimeout) || took > 2*time.Second {
			t.Errorf("Connect to a silent target = %v after %v; want ErrTimeout at 700ms", err, took)
		}
		ln.Close() // let the kernel's connect fail now rather than in 10 s
		cmu.Lock()
		for _, c := range conns {
			c.Close()
		}
		cmu.Unlock()
		if _, err := h.Probe(); err != nil { // waits for the kernel's fabrics mutex
			t.Fatal(err)
		}
		t.Logf("the kernel released the fabrics device %v after the deadline", time.Since(start.Add(700*time.Millisecond)).Round(time.Millisecond))
	})

	t.Run("sweep", func(t *testing.T) {
		d3, err := h.Connect(ctx, Target{Address: vmLocal, NQN: vmPVC3}, Options{})
		if err != nil {
			t.Fatal(err)
		}
		d10, err := h.Resolve(vmPVC10, 1)
		if err != nil {
			t.Fatal(err)
		}
		mkfsMount(t, d10.DevPath, "/mnt/pvc-10") // unclaimed but in use: must stay
		var asked []string
		rep, err := h.Sweep(ctx, map[string]bool{vmPVC1: true}, vmOwned(vmPVC1, vmPVC3, vmPVC10, vmMulti), func(d Disk) bool {
			asked = append(asked, d.NQN)
			return mounted(t, d.Major, d.Minor)
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("sweep: disconnected %v, kept %+v", rep.Disconnected, rep.Kept)
		if fmt.Sprint(rep.Disconnected) != fmt.Sprint([]string{vmPVC3, vmMulti}) && fmt.Sprint(rep.Disconnected) != fmt.Sprint([]string{vmMulti, vmPVC3}) {
			t.Errorf("disconnected %v, want %s and %s", rep.Disconnected, vmPVC3, vmMulti)
		}
		for _, n := range asked {
			if n == vmVar {
				t.Error("the sweep asked about the unmanaged /var disk")
			}
		}
		for nqn, want := range map[string]int{vmPVC3: 0, vmMulti: 0, vmPVC1: 1, vmPVC10: 1, vmVar: 1} {
			if got := len(vmsys.ControllerNames(nqn)); got != want {
				t.Errorf("%s has %d controllers after the sweep, want %d", nqn, got, want)
			}
		}
		if _, err := os.Stat(d3.DevPath); !os.IsNotExist(err) {
			t.Errorf("%s still exists after the sweep: %v", d3.DevPath, err)
		}
	})

	t.Run("disconnect verified and idempotent", func(t *testing.T) {
		for _, m := range []string{"/mnt/pvc-1", "/mnt/pvc-10"} {
			if err := unix.Unmount(m, 0); err != nil {
				t.Fatalf("unmount %s: %v", m, err)
			}
		}
		for _, nqn := range []string{vmPVC1, vmPVC10} {
			d, err := h.Resolve(nqn, 1)
			if err != nil {
				t.Fatal(err)
			}
			if err := h.Disconnect(ctx, nqn); err != nil {
				t.Fatalf("Disconnect(%s): %v", nqn, err)
			}
			if c := vmsys.ControllerNames(nqn); len(c) != 0 {
				t.Fatalf("controllers %v of %s remain after Disconnect returned", c, nqn)
			}
			if _, err := os.Stat(d.DevPath); !os.IsNotExist(err) {
				t.Errorf("%s remains after Disconnect: %v", d.DevPath, err)
			}
			if _, err := h.Resolve(nqn, 1); !errors.Is(err, ErrNotConnected) {
				t.Errorf("Resolve after Disconnect = %v, want ErrNotConnected", err)
			}
			if err := h.Disconnect(ctx, nqn); err != nil {
				t.Errorf("second Disconnect(%s) = %v, want nil", nqn, err)
			}
		}
		if err := h.Disconnect(ctx, vmVar); !errors.Is(err, ErrNotManaged) {
			t.Errorf("Disconnect(%s) = %v, want ErrNotManaged", vmVar, err)
		}
	})

	t.Run("connect latency", func(t *testing.T) {
		measureConnectLatency(t, h, 5)
	})

	t.Run("unmanaged /var survived everything", func(t *testing.T) {
		rep, err := h.Sweep(ctx, nil, vmOwned(vmVar), func(Disk) bool { return false })
		if err != nil || len(rep.Disconnected) != 0 {
			t.Errorf("final sweep = %+v, %v; want nothing disconnected", rep, err)
		}
		checkVar(t, v)
	})
}

// TestVMMultipathOff runs in a second boot with nvme_core.multipath=N, where disks are
// named after the controller (nvme<C>n<H>) and live under the controller's sysfs directory.
func TestVMMultipathOff(t *testing.T) {
	requireVM(t)
	if mp := vmsys.Attr("/sys/module/nvme_core/parameters/multipath"); mp != "N" {
		t.Fatalf("nvme_core.multipath = %s: this test needs a boot with nvme_core.multipath=N", mp)
	}
	export(t, vmPVC1, "64M", 1, 1)
	export(t, vmMulti, "16M", 3, 1)
	export(t, vmMulti, "24M", 9, 1)
	export(t, vmPVC2, "64M", 1, 2)
	h := newVMHost(t)
	v := connectVar(t, h)
	ctx := context.Background()

	d, err := h.Connect(ctx, Target{Address: vmLocal, NQN: vmPVC1}, Options{ReconnectDelay: intp(1)})
	if err != nil {
		t.Fatal(err)
	}
	ctrl := d.Controllers[0].Name
	if _, err := os.Stat(filepath.Join("/sys/class/nvme", ctrl, d.Name)); err != nil || !strings.HasPrefix(d.Name, ctrl+"n") {
		t.Fatalf("disk %s is not the per-controller disk of %s: %v", d.Name, ctrl, err)
	}
	t.Logf("multipath off: %s -> controller %s, disk %s", vmPVC1, ctrl, d.Name)
	mkfsMount(t, d.DevPath, "/mnt/pvc-1")
	if again, err := h.Connect(ctx, Target{Address: vmLocal, NQN: vmPVC1}, Options{ReconnectDelay: intp(1)}); err != nil || again.Name != d.Name {
		t.Fatalf("Connect again (EALREADY) = %+v, %v; want %s", again, err, d.Name)
	}
	d9, err := h.Connect(ctx, Target{Address: vmLocal, NQN: vmMulti, NSID: 9}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	d3, err := h.Resolve(vmMulti, 3)
	if err != nil || d3.Name == d9.Name || d9.SizeBytes != 24<<20 || d3.SizeBytes != 16<<20 {
		t.Fatalf("nsid 9 = %+v, nsid 3 = %+v, %v", d9, d3, err)
	}
	t.Run("ctrl_loss expiry then reconnect with new names", func(t *testing.T) { ctrlLossThenReconnect(t, h) })

	rep, err := h.Sweep(ctx, map[string]bool{vmPVC1: true}, vmOwned(vmPVC1, vmPVC3, vmPVC10, vmMulti), func(d Disk) bool { return mounted(t, d.Major, d.Minor) })
	if err != nil || fmt.Sprint(rep.Disconnected) != fmt.Sprint([]string{vmMulti}) {
		t.Fatalf("sweep = %+v, %v; want only %s disconnected", rep, err, vmMulti)
	}
	if err := unix.Unmount("/mnt/pvc-1", 0); err != nil {
		t.Fatal(err)
	}
	if err := h.Disconnect(ctx, vmPVC1); err != nil || len(vmsys.ControllerNames(vmPVC1)) != 0 {
		t.Fatalf("Disconnect = %v, controllers left %v", err, vmsys.ControllerNames(vmPVC1))
	}
	checkVar(t, v)
}

// ctrlLossThenReconnect mounts pvc-2, keeps the target away past ctrl_loss_tmo (the
// controller and disk vanish under the mount), reconnects, and proves the new, renumbered
// disk is the one resolved and holds the data.
func ctrlLossThenReconnect(t *testing.T, h *Host) {
	ctx := context.Background()
	old, err := h.Connect(ctx, Target{Address: vmLocal, Port: port2, NQN: vmPVC2}, Options{CtrlLossTmo: intp(2), ReconnectDelay: intp(1)})
	if err != nil {
		t.Fatal(err)
	}
	mkfsMount(t, old.DevPath, "/mnt/pvc-2")
	if err := writeSync("/mnt/pvc-2/data", []byte("before the loss\n")); err != nil {
		t.Fatal(err)
	}
	sh(t, 10*time.Second, "nvmet-port-down", "2")
	down := time.Now()
	if !waitFor(15*time.Second, func() bool { hl, _ := h.Health(vmPVC2); return !hl.Connected }) {
		t.Fatal("the controller was never removed after ctrl_loss_tmo")
	}
	t.Logf("controller gone %v after the target went down (ctrl_loss_tmo=2)", time.Since(down).Round(time.Millisecond))
	if _, err := h.Resolve(vmPVC2, 1); !errors.Is(err, ErrNotConnected) {
		t.Fatalf("Resolve after the loss = %v, want ErrNotConnected", err)
	}
	subs, _ := h.Subsystems()
	for _, s := range subs {
		if s.NQN == vmPVC2 {
			t.Logf("stale subsystem left while the old disk is mounted: %+v", s)
		}
	}
	sh(t, 10*time.Second, "nvmet-port-up", "2")
	d, err := h.Connect(ctx, Target{Address: vmLocal, Port: port2, NQN: vmPVC2}, Options{CtrlLossTmo: intp(2), ReconnectDelay: intp(1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("renumbered: disk %s (%d:%d) -> %s (%d:%d), controller %s -> %s", old.Name, old.Major, old.Minor, d.Name, d.Major, d.Minor, old.Controllers[0].Name, d.Controllers[0].Name)
	if d.Name == old.Name || (d.Major == old.Major && d.Minor == old.Minor) {
		t.Fatalf("the kernel reused the name %s: this test means to prove renumbered names are resolved", d.Name)
	}
	if r, err := h.Resolve(vmPVC2, 1); err != nil || r.Name != d.Name {
		t.Fatalf("Resolve = %+v, %v; want the new disk %s", r, err, d.Name)
	}
	// The old mount is stale; replace it with the new disk: the data is there.
	if err := unix.Unmount("/mnt/pvc-2", 0); err != nil {
		t.Fatalf("unmount the stale mount: %v", err)
	}
	if err := unix.Mount(d.DevPath, "/mnt/pvc-2", "ext4", 0, ""); err != nil {
		t.Fatalf("mount the new disk: %v", err)
	}
	if b, err := os.ReadFile("/mnt/pvc-2/data"); err != nil || string(b) != "before the loss\n" {
		t.Fatalf("data after reconnect: %q, %v", b, err)
	}
	if err := unix.Unmount("/mnt/pvc-2", 0); err != nil {
		t.Fatal(err)
	}
	if err := h.Disconnect(ctx, vmPVC2); err != nil {
		t.Fatal(err)
	}
}

// vmOwned is the ownership proof a sweep gets: the subsystems this test connected itself
// (an unmanaged one among them proves that the prefix guard alone keeps it safe).
func vmOwned(nqns ...string) map[string]bool {
	owned := map[string]bool{}
	for _, n := range nqns {
		owned[n] = true
	}
	return owned
}
