package main

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
)

// BenchmarkControllerCreateVolume measures what CreateVolume costs beyond the RouterOS
// operations it runs: the RPC's time at a gRPC client over a unix socket (interceptor,
// validation, locking, marshalling) less the time spent inside routeros calls, against the
// simulator with zero latency. The goal is a p50 under 2 ms.
func BenchmarkControllerCreateVolume(b *testing.B) {
	e := newCtrlEnv(b)
	client := csi.NewControllerClient(dial(b, e.serve(nil)))
	ctx := context.Background()
	params := map[string]string{"volumePath": testVolumePath, "ctrlLossTmo": "-1", "csi.storage.k8s.io/pvc/name": "data"}
	overheads := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := range b.N {
		req := createReq(fmt.Sprintf("pvc-bench-%08d", i), 1<<20)
		req.Parameters = params
		before := e.inRouterOS.Load()
		start := time.Now()
		if _, err := client.CreateVolume(ctx, req); err != nil {
			b.Fatal(err)
		}
		total := time.Since(start)
		overheads = append(overheads, total-time.Duration(e.inRouterOS.Load()-before))
		b.StopTimer() // keep the simulator's state small: its lookups scan every disk
		if _, err := client.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: req.Name}); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	slices.Sort(overheads)
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	b.ReportMetric(ms(overheads[len(overheads)/2]), "overhead-p50-ms")
	b.ReportMetric(ms(overheads[len(overheads)*99/100]), "overhead-p99-ms")
}
