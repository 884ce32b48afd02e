package sim

import (
	"context"
	"fmt"
	"testing"
)

// newSimWithDisks makes a simulator holding n exported pvc disks.
func newSimWithDisks(b testing.TB, n int) *Sim {
	s := newSim(b, Options{})
	for i := range n {
		slot := fmt.Sprintf("pvc-%08d-a8bf-572e-9120-464c4d99f12f", i)
		mustExec(b, s, fmt.Sprintf(`/disk add type=file file-path="/storage-pool/metal-csi/%s.img" file-size=1G slot=%q nvme-tcp-export=yes nvme-tcp-server-port=4420 nvme-tcp-server-nqn="nqn.2000-02.com.mikrotik:%s"`, slot, slot, slot))
	}
	return s
}

// The listing a client parses in its 1 000-disk benchmark.
func BenchmarkPrint1000Disks(b *testing.B) {
	s := newSimWithDisks(b, 1000)
	b.ResetTimer()
	for b.Loop() {
		if _, err := s.Exec(context.Background(), `/disk print detail where slot~"^pvc-"`); err != nil {
			b.Fatal(err)
		}
	}
}

// One disk looked up among 1 000, as the client does after every create.
func BenchmarkPrintOneOf1000Disks(b *testing.B) {
	s := newSimWithDisks(b, 1000)
	b.ResetTimer()
	for b.Loop() {
		if _, err := s.Exec(context.Background(), `/disk print detail where slot="pvc-00000500-a8bf-572e-9120-464c4d99f12f"`); err != nil {
			b.Fatal(err)
		}
	}
}

// The floor under a client's per-command overhead: one exec round trip on a persistent
// connection over loopback, with no latency injected.
func BenchmarkSSHRoundTrip(b *testing.B) {
	ts := StartTest(b, Options{})
	c := dial(b, ts)
	b.ResetTimer()
	for b.Loop() {
		if out, _, _ := sshRun(b, c, `:put x`); out != "x\n" {
			b.Fatalf("got %q", out)
		}
	}
}
