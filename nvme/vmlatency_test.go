//go:build vmtest

// Connect latency on the real kernel, and the driver's share of it.

package nvme

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"srvlab.io/rds-csi/internal/vmsys"
)

// measureConnectLatency times, over n rounds, (a) the kernel alone: a raw fabrics write
// and a tight loop until the disk's /dev node exists, and (b) the driver: Connect. The
// driver's share is what Connect adds to the kernel's time.
func measureConnectLatency(t testing.TB, h *Host, n int) (kernelWrite, kernelDisk, driverTotal, driverWrite, driverDisk time.Duration) {
	ctx := context.Background()
	opts, err := connectString(Target{Address: vmLocal, Port: port1, NQN: vmPVC3, NSID: 1}, h.Identity(), Options{}, Features{})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		// (a) the kernel alone
		start := time.Now()
		reply, err := h.fab.connect(opts)
		written := time.Now()
		if err != nil {
			t.Fatalf("raw connect: %v (%s)", err, reply)
		}
		var inst, cntlid int
		fmt.Sscanf(reply, "instance=%d,cntlid=%d", &inst, &cntlid)
		var seen time.Time
		for seen.IsZero() && time.Since(written) < 5*time.Second {
			for _, pattern := range []string{"/sys/class/nvme-subsystem/*/nvme*n1", "/sys/class/nvme/nvme*/nvme*n1"} {
				matches, _ := filepath.Glob(pattern)
				for _, m := range matches {
					if isDiskName(filepath.Base(m)) && vmsys.Attr(filepath.Join(filepath.Dir(m), "subsysnqn")) == vmPVC3 {
						if _, err := os.Stat("/dev/" + filepath.Base(m)); err == nil {
							seen = time.Now()
						}
					}
				}
			}
		}
		if seen.IsZero() {
			t.Fatal("the kernel never showed the disk")
		}
		kernelWrite += written.Sub(start)
		kernelDisk += seen.Sub(written)
		if err := h.Disconnect(ctx, vmPVC3); err != nil {
			t.Fatal(err)
		}
		// (b) the driver
		var marks = map[string]time.Time{}
		restore := traceConnect(h, func(stage string, at time.Time) { marks[stage] = at })
		start = time.Now()
		if _, err := h.Connect(ctx, Target{Address: vmLocal, NQN: vmPVC3}, Options{}); err != nil {
			t.Fatal(err)
		}
		driverTotal += time.Since(start)
		driverWrite += marks["written"].Sub(marks["write"])
		driverDisk += marks["resolved"].Sub(marks["written"])
		restore()
		if err := h.Disconnect(ctx, vmPVC3); err != nil {
			t.Fatal(err)
		}
	}
	avg := func(d time.Duration) time.Duration { return (d / time.Duration(n)).Round(10 * time.Microsecond) }
	kernelWrite, kernelDisk, driverTotal, driverWrite, driverDisk = avg(kernelWrite), avg(kernelDisk), avg(driverTotal), avg(driverWrite), avg(driverDisk)
	t.Logf("connect latency over %d rounds: kernel alone: write %v, disk visible %v after the write returned; "+
		"driver: Connect %v = write %v + disk resolvable %v after it + %v of its own (probe, parsing); driver's share beyond the kernel: %v",
		n, kernelWrite, kernelDisk, driverTotal, driverWrite, driverDisk, driverTotal-driverWrite-driverDisk, driverTotal-driverWrite-kernelDisk)
	return
}

// BenchmarkVMConnect reports the real kernel's connect latency and the driver's share:
// kernel-disk-ms (write return to disk visible, measured without the driver),
// driver-disk-ms (Connect's write return to disk resolvable), added-ms (Connect's time
// beyond its kernel write and the kernel's disk delay). One op = one raw round and one
// driver round, each with a disconnect.
func BenchmarkVMConnect(b *testing.B) {
	requireVM(b)
	export(b, vmPVC3, "16M", 1, 1)
	h := newVMHost(b)
	h.log = slog.New(slog.NewTextHandler(os.Stdout, &slog.HandlerOptions{Level: slog.LevelWarn}))
	b.ResetTimer()
	_, kd, dt, dw, dd := measureConnectLatency(b, h, b.N)
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	b.ReportMetric(ms(kd), "kernel-disk-ms/op")
	b.ReportMetric(ms(dd), "driver-disk-ms/op")
	b.ReportMetric(ms(dt-dw-kd), "added-ms/op")
}
