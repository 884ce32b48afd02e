package main

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics holds every collector the driver exports, on a registry of its own (no global
// state, so tests can build as many drivers as they like). A scrape never does I/O against
// the RDS or the kernel: values are pushed by the code that already did the work.
type metrics struct {
	registry *prometheus.Registry

	rpcTotal          *prometheus.CounterVec
	rpcDuration       *prometheus.HistogramVec
	routerosDuration  *prometheus.HistogramVec
	routerosErrors    *prometheus.CounterVec
	rdsConnected      prometheus.Gauge
	poolSizeBytes     *prometheus.GaugeVec
	poolFreeBytes     *prometheus.GaugeVec
	nvmeOperations    *prometheus.CounterVec
	volumeNVMeState   *prometheus.GaugeVec
	volumePaths       *prometheus.GaugeVec
	healsTotal        *prometheus.CounterVec
	staleMountsTotal  prometheus.Counter
	breakersOpen      prometheus.Gauge
	unownedSubsystems prometheus.Gauge
	migrationTimeouts prometheus.Counter
}

func newMetrics() *metrics {
	const ns = "rds_csi"
	m := &metrics{
		registry: prometheus.NewRegistry(),
		rpcTotal: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "rpc_total",
			Help: "CSI RPCs served, by method and gRPC code."}, []string{"method", "code"}),
		rpcDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Name: "rpc_duration_seconds",
			Help: "CSI RPC latency, by method and gRPC code.", Buckets: prometheus.ExponentialBuckets(0.001, 2.5, 12)},
			[]string{"method", "code"}),
		routerosDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Name: "routeros_command_duration_seconds",
			Help: "RouterOS operation latency over SSH, by operation.", Buckets: prometheus.ExponentialBuckets(0.005, 2.5, 10)},
			[]string{"operation"}),
		routerosErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "routeros_command_errors_total",
			Help: "RouterOS operations that failed, by operation and error kind."}, []string{"operation", "kind"}),
		rdsConnected: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Name: "rds_ssh_connected",
			Help: "1 while the SSH connection to the RDS is up."}),
		poolSizeBytes: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Name: "pool_size_bytes",
			Help: "Pool size from the last successful capacity query."}, []string{"pool"}),
		poolFreeBytes: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Name: "pool_free_bytes",
			Help: "Pool free space from the last successful capacity query."}, []string{"pool"}),
		nvmeOperations: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "nvme_operations_total",
			Help: "NVMe/TCP connects, disconnects and rescans, by result."}, []string{"operation", "result"}),
		volumeNVMeState: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Name: "volume_nvme_controller_live",
			Help: "Per staged volume: 1 when an NVMe controller of it is live, 0 otherwise."}, []string{"volume_id"}),
		volumePaths: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Name: "volume_nvme_paths",
			Help: "Per staged volume: its NVMe/TCP paths, configured (in use: 1 with native multipath off) and live."}, []string{"volume_id", "state"}),
		healsTotal: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "heals_total",
			Help: "Stale staged volumes the node reconnected and remounted, by result."}, []string{"result"}),
		staleMountsTotal: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "stale_mounts_total",
			Help: "Mounts found on a device that no longer backs their volume."}),
		breakersOpen: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Name: "breakers_open",
			Help: "Volumes whose staging circuit breaker is open."}),
		unownedSubsystems: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Name: "unowned_subsystems",
			Help: "Managed NVMe subsystems connected on this node that no staged volume claims and nothing proves this driver connected (left alone)."}),
		migrationTimeouts: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "migration_timeouts_total",
			Help: "Block volumes that stayed published to two nodes longer than migrationTimeoutSeconds."}),
	}
	m.registry.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.rpcTotal, m.rpcDuration, m.routerosDuration, m.routerosErrors, m.rdsConnected,
		m.poolSizeBytes, m.poolFreeBytes, m.nvmeOperations, m.volumeNVMeState, m.volumePaths, m.healsTotal,
		m.staleMountsTotal, m.breakersOpen, m.unownedSubsystems, m.migrationTimeouts,
	)
	return m
}

func (m *metrics) observeRPC(method, code string, d time.Duration) {
	m.rpcTotal.WithLabelValues(method, code).Inc()
	m.rpcDuration.WithLabelValues(method, code).Observe(d.Seconds())
}

// observeRouterOS is the routeros client's per-operation hook; kind classifies the error.
func (m *metrics) observeRouterOS(op string, d time.Duration, kind string) {
	m.routerosDuration.WithLabelValues(op).Observe(d.Seconds())
	if kind != "" {
		m.routerosErrors.WithLabelValues(op, kind).Inc()
	}
}

func (m *metrics) observeNVMe(op string, err error) {
	result := "ok"
	if err != nil {
		result = "error"
	}
	m.nvmeOperations.WithLabelValues(op, result).Inc()
}

// metricsServer serves /metrics and /healthz. /healthz is 200 while the gRPC server serves
// and 503 once shutdown has begun.
type metricsServer struct {
	srv        *http.Server
	listenAddr string
	serving    atomic.Bool
}

func startMetricsServer(addr string, m *metrics, log *slog.Logger) (*metricsServer, error) {
	ms := &metricsServer{}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{Registry: m.registry}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		if !ms.serving.Load() {
			http.Error(w, "not serving", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	ms.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	ms.listenAddr = lis.Addr().String()
	go func() {
		if err := ms.srv.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics listener stopped", "err", err)
		}
	}()
	log.Info("metrics listening", "address", lis.Addr().String())
	return ms, nil
}

func (ms *metricsServer) shutdown() {
	if ms == nil {
		return
	}
	ms.serving.Store(false)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = ms.srv.Shutdown(ctx)
}
