package main

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
)

// How the controller figures are measured.
const (
	controllerIdle   = 5 * time.Second // ready, then idle this long before VmRSS is read
	overheadWarmup   = 10
	overheadSamples  = 200
	parallelCreates  = 50
	parallelLatency  = 50 * time.Millisecond
	parallelSessions = 4 // the driver's default --rds-max-sessions
)

// controllerFigures runs a --mode=controller process against the simulator and measures
// its idle RSS, the CreateVolume overhead beyond RouterOS time, and 50 parallel creates.
func controllerFigures(ctx context.Context, bins binaries, work string) []figure {
	specs := []spec{figCtrlRSS, figCreateP50, figCreateP99, figParallel}
	if bins.driverErr != nil {
		return naAll("build failed: "+bins.driverErr.Error(), specs...)
	}
	r, err := startRDS(filepath.Join(work, "rds-controller"), 0)
	if err != nil {
		return naAll("simulator: "+err.Error(), specs...)
	}
	defer r.close()
	d, err := newDriver("controller", filepath.Join(work, "controller"))
	if err != nil {
		return naAll(err.Error(), specs...)
	}
	metricsAddr, err := freeLoopbackAddr()
	if err != nil {
		return naAll(err.Error(), specs...)
	}
	args := append(d.commonArgs("controller"), r.driverArgs()...)
	args = replaceArg(args, "--metrics-address=", metricsAddr)
	if err := d.start(bins.driver, args); err != nil {
		return naAll(err.Error(), specs...)
	}
	defer d.stop()
	if err := d.waitReady(30 * time.Second); err != nil {
		return naAll(err.Error(), specs...)
	}

	figs := []figure{controllerRSS(d, "http://"+metricsAddr+"/metrics")}
	prof.heap(d, "controller-idle")
	figs = append(figs, createOverhead(ctx, d, r, "http://"+metricsAddr+"/metrics")...)
	n := 0
	prof.cpu(d, "controller-create-volume", 5, func() error {
		n++
		_, err := d.ctrl.CreateVolume(ctx, createRequest(fmt.Sprintf("pvc-%08d-0000-4000-8000-0000000000cc", n)))
		return err
	})
	figs = append(figs, parallelCreate(ctx, d, r))
	if err := d.stop(); err != nil {
		noteAll(figs, err.Error())
	}
	return figs
}

// controllerRSS reads VmRSS once the controller has been ready and idle for a while.
func controllerRSS(d *driver, metricsURL string) figure {
	time.Sleep(controllerIdle)
	m, err := d.memory()
	if err != nil {
		return figCtrlRSS.na("%v", err)
	}
	return figCtrlRSS.measured(mib(m.RSS), "production build, --mode=controller against the simulator (metrics listener on, as deployed), ready (Probe) and idle %v: %s; %s",
		controllerIdle, m, goMemoryOf(metricsURL))
}

// goMemoryOf describes the Go runtime's memory of a process, or why it could not.
func goMemoryOf(metricsURL string) string {
	g, err := scrapeGoMemory(metricsURL)
	if err != nil {
		return "no go_memstats: " + err.Error()
	}
	return g.String()
}

// createOverhead measures CreateVolume through the controller's gRPC socket against the
// simulator with no injected latency, and subtracts the time the controller itself spent
// in RouterOS operations. That time is read from the controller's own
// rds_csi_routeros_command_duration_seconds histogram (its sum over every operation),
// scraped just before and just after each call: it covers each operation from the
// routeros client's entry to its return — waiting for an SSH session, the exec round trip,
// the simulator's work and parsing the output. What remains is the driver's own cost:
// gRPC, the interceptor's logging and metrics, validation, the per-volume lock, building
// the command and the response. A sample during which a background RouterOS call ran
// (health Ping, pool refresh) would have that call subtracted too; such samples are
// dropped and redone.
func createOverhead(ctx context.Context, d *driver, r *rds, metricsURL string) []figure {
	specs := []spec{figCreateP50, figCreateP99}
	background := []string{"Ping", "PoolCapacity"}
	var overhead, wall, ros []time.Duration
	cmdsBefore := len(r.Commands())
	dropped := 0
	for i := 0; len(overhead) < overheadSamples; i++ {
		before, err := scrapeRouterOS(metricsURL)
		if err != nil {
			return naAll("metrics: "+err.Error(), specs...)
		}
		start := time.Now()
		_, err = d.ctrl.CreateVolume(ctx, createRequest(fmt.Sprintf("pvc-%08d-0000-4000-8000-00000000b0b0", i)))
		took := time.Since(start)
		if err != nil {
			return naAll("CreateVolume: "+err.Error(), specs...)
		}
		after, err := scrapeRouterOS(metricsURL)
		if err != nil {
			return naAll("metrics: "+err.Error(), specs...)
		}
		if i < overheadWarmup {
			continue
		}
		if after.ranAny(before, background) {
			dropped++
			continue
		}
		spent := after.sum - before.sum
		wall, ros, overhead = append(wall, took), append(ros, spent), append(overhead, took-spent)
	}
	perCall := float64(len(r.Commands())-cmdsBefore) / float64(overheadSamples+overheadWarmup+dropped)
	detail := fmt.Sprintf("%d CreateVolume calls (after %d warm-up) over gRPC to --mode=controller, simulator at 0 latency, %.1f RouterOS commands per call; "+
		"overhead = call time − the controller's own RouterOS operation time (its routeros_command_duration histogram, scraped around each call; %d samples with background RouterOS calls redone); "+
		"call p50 %s / p99 %s, RouterOS part p50 %s / p99 %s",
		overheadSamples, overheadWarmup, perCall, dropped, ms(pct(wall, 50)), ms(pct(wall, 99)), ms(pct(ros, 50)), ms(pct(ros, 99)))
	return []figure{
		figCreateP50.measured(msf(pct(overhead, 50)), "%s", detail),
		figCreateP99.measured(msf(pct(overhead, 99)), "see the row above"),
	}
}

// parallelCreate times 50 CreateVolume calls one at a time, then 50 at once, with the
// simulator taking 50 ms per command and the controller at its default 4 SSH sessions.
func parallelCreate(ctx context.Context, d *driver, r *rds) figure {
	r.SetLatency(parallelLatency)
	defer r.SetLatency(0)
	create := func(name string) error {
		_, err := d.ctrl.CreateVolume(ctx, createRequest(name))
		return err
	}
	cmds := len(r.Commands())
	start := time.Now()
	for i := range parallelCreates {
		if err := create(fmt.Sprintf("pvc-%08d-0000-4000-8000-0000000000aa", i)); err != nil {
			return figParallel.na("serial CreateVolume: %v", err)
		}
	}
	serial := time.Since(start)
	perCall := float64(len(r.Commands())-cmds) / parallelCreates
	errs := make(chan error, parallelCreates)
	var wg sync.WaitGroup
	start = time.Now()
	for i := range parallelCreates {
		wg.Go(func() { errs <- create(fmt.Sprintf("pvc-%08d-0000-4000-8000-0000000000bb", i)) })
	}
	wg.Wait()
	concurrent := time.Since(start)
	close(errs)
	for err := range errs {
		if err != nil {
			return figParallel.na("parallel CreateVolume: %v", err)
		}
	}
	st := r.Stats()
	return figParallel.measured(concurrent.Seconds()/serial.Seconds(),
		"50 CreateVolume over gRPC, simulator at %v per command (%.1f commands per call), --rds-max-sessions=%d: one at a time %s, all at once %s; the simulator saw at most %d sessions at once on %d connection(s)",
		parallelLatency, perCall, parallelSessions, serial.Round(time.Millisecond), concurrent.Round(time.Millisecond), st.PeakConcurrency, st.Connections)
}

// createRequest is what the external-provisioner sends for a 1 GiB ext4 RWO volume with
// the StorageClass defaults.
func createRequest(name string) *csi.CreateVolumeRequest {
	return &csi.CreateVolumeRequest{
		Name:          name,
		CapacityRange: &csi.CapacityRange{RequiredBytes: 1 << 30},
		VolumeCapabilities: []*csi.VolumeCapability{{
			AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{FsType: "ext4"}},
			AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER},
		}},
	}
}

// routerosTime is the controller's RouterOS operation histogram, summed.
type routerosTime struct {
	sum    time.Duration
	counts map[string]float64 // by operation
}

// ranAny reports whether any of the operations ran between before and r.
func (r routerosTime) ranAny(before routerosTime, ops []string) bool {
	for _, op := range ops {
		if r.counts[op] != before.counts[op] {
			return true
		}
	}
	return false
}

var metricsClient = &http.Client{Timeout: 5 * time.Second}

// scrapeRouterOS reads rds_csi_routeros_command_duration_seconds from /metrics.
func scrapeRouterOS(url string) (routerosTime, error) {
	const name = "rds_csi_routeros_command_duration_seconds"
	resp, err := metricsClient.Get(url)
	if err != nil {
		return routerosTime{}, err
	}
	defer resp.Body.Close()
	rt := routerosTime{counts: map[string]float64{}}
	var seconds float64
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<16), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		rest, isSum := strings.CutPrefix(line, name+"_sum{")
		if !isSum {
			var isCount bool
			if rest, isCount = strings.CutPrefix(line, name+"_count{"); !isCount {
				continue
			}
		}
		labels, value, ok := strings.Cut(rest, "} ")
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
		if err != nil {
			return rt, fmt.Errorf("metrics line %q: %v", line, err)
		}
		if isSum {
			seconds += v
		} else {
			op := strings.TrimSuffix(strings.TrimPrefix(labels, `operation="`), `"`)
			rt.counts[op] = v
		}
	}
	rt.sum = time.Duration(seconds * float64(time.Second))
	return rt, sc.Err()
}

// freeLoopbackAddr returns a 127.0.0.1 port that was free a moment ago.
func freeLoopbackAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// replaceArg replaces the flag with the given prefix (e.g. "--metrics-address=").
func replaceArg(args []string, prefix, value string) []string {
	out := slices.Clone(args)
	for i, a := range out {
		if strings.HasPrefix(a, prefix) {
			out[i] = prefix + value
			return out
		}
	}
	return append(out, prefix+value)
}

// pct is the p-th percentile (nearest rank) of the durations.
func pct(ds []time.Duration, p int) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := (len(s)*p + 99) / 100
	return s[max(0, min(len(s)-1, i-1))]
}

func msf(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
func ms(d time.Duration) string   { return formatNumber(msf(d)) + " ms" }

// childEnv is the environment of driver processes: the harness's, without anything that
// would configure the driver behind the flags' back.
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "RDS_") || strings.HasPrefix(k, "CSI_") || strings.HasPrefix(k, "KUBERNETES_") || k == "KUBECONFIG" || k == "NODE_ID" {
			continue
		}
		env = append(env, kv)
	}
	return env
}
