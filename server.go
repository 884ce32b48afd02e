package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync/atomic"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// socketPath turns the --endpoint value (unix:///abs/path, unix://rel/path or a plain
// path) into a filesystem path.
func socketPath(endpoint string) (string, error) {
	switch {
	case strings.HasPrefix(endpoint, "unix://"):
		p := strings.TrimPrefix(endpoint, "unix://")
		if p == "" {
			return "", fmt.Errorf("--endpoint %q has no socket path", endpoint)
		}
		return p, nil
	case strings.Contains(endpoint, "://"):
		return "", fmt.Errorf("--endpoint %q: only unix sockets are served (unix:///path or a plain path)", endpoint)
	case endpoint == "":
		return "", errors.New("--endpoint is empty: give a unix socket, e.g. unix:///csi/csi.sock")
	}
	return endpoint, nil
}

// listenUnix creates the socket directory, removes a stale socket left by a previous
// process (never a live one, never anything that is not a socket) and listens.
func listenUnix(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("create socket directory: %w", err)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("%s exists and is not a socket: remove it or choose another --endpoint", path)
		}
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("%s is served by another running process: stop it first", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("remove stale socket: %w", err)
		}
	}
	lis, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	return lis, nil
}

type ctxLoggerKey struct{}

// logFrom returns the request's logger (carrying method and volume ID), or the default.
func logFrom(ctx context.Context) *slog.Logger {
	if l, ok := ctx.Value(ctxLoggerKey{}).(*slog.Logger); ok {
		return l
	}
	return slog.Default()
}

// quietMethods are polled by sidecars and kubelet; their successes are logged at debug only.
var quietMethods = map[string]bool{
	"Probe": true, "GetPluginInfo": true, "GetPluginCapabilities": true,
	"ControllerGetCapabilities": true, "NodeGetCapabilities": true, "NodeGetInfo": true,
	"NodeGetVolumeStats": true, "GetCapacity": true, "ListVolumes": true, "ControllerGetVolume": true,
}

// requestSubject names what a request is about, for logs: the volume, snapshot or name.
func requestSubject(req any) []any {
	var attrs []any
	add := func(key, v string) {
		if v != "" {
			attrs = append(attrs, key, v)
		}
	}
	if r, ok := req.(interface{ GetVolumeId() string }); ok {
		add("volume_id", r.GetVolumeId())
	}
	if r, ok := req.(interface{ GetSnapshotId() string }); ok {
		add("snapshot_id", r.GetSnapshotId())
	}
	if r, ok := req.(interface{ GetSourceVolumeId() string }); ok {
		add("volume_id", r.GetSourceVolumeId())
	}
	if r, ok := req.(interface{ GetName() string }); ok {
		add("name", r.GetName())
	}
	if r, ok := req.(interface{ GetNodeId() string }); ok {
		add("node_id", r.GetNodeId())
	}
	return attrs
}

// rpcInterceptor logs every call (never secrets), records metrics, and turns a handler's
// panic into Internal, so one bug cannot crash the node plugin under every volume.
func rpcInterceptor(log *slog.Logger, m *metrics) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
		method := info.FullMethod[strings.LastIndex(info.FullMethod, "/")+1:]
		reqLog := log.With(append([]any{"method", method}, requestSubject(req)...)...)
		ctx = context.WithValue(ctx, ctxLoggerKey{}, reqLog)
		if msg, ok := req.(proto.Message); ok && reqLog.Enabled(ctx, slog.LevelDebug) {
			reqLog.Debug("request", "request", redactSecrets(msg))
		}
		start := time.Now()
		defer func() {
			if r := recover(); r != nil {
				reqLog.Error("handler panicked", "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
				resp, err = nil, status.Errorf(codes.Internal, "internal error in %s: %v (a bug in rds-csi; please report it with the driver log)", method, r)
			}
			d := time.Since(start)
			code := status.Code(err)
			m.observeRPC(method, code.String(), d)
			attrs := []any{"duration", d.Round(time.Microsecond), "code", code.String()}
			switch {
			case err == nil && quietMethods[method]:
				reqLog.Debug("rpc", attrs...)
			case err == nil:
				reqLog.Info("rpc", attrs...)
			case code == codes.Internal || code == codes.Unknown:
				reqLog.Error("rpc", append(attrs, "error", status.Convert(err).Message())...)
			default:
				reqLog.Warn("rpc", append(attrs, "error", status.Convert(err).Message())...)
			}
		}()
		return handler(ctx, req)
	}
}

// serveUntil serves until ctx ends, then stops accepting and lets in-flight RPCs finish for
// at most grace before stopping hard.
func serveUntil(ctx context.Context, srv *grpc.Server, lis net.Listener, grace time.Duration, log *slog.Logger) error {
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(lis) }()
	select {
	case err := <-errc:
		return fmt.Errorf("gRPC server stopped: %w", err)
	case <-ctx.Done():
	}
	log.Info("shutting down: finishing in-flight calls", "grace", grace)
	done := make(chan struct{})
	go func() { srv.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-time.After(grace):
		log.Warn("in-flight calls did not finish in time; stopping hard", "grace", grace)
		// a handler stuck in a syscall may still run; the exiting process does not wait
		srv.Stop()
	}
	return nil
}

// identityService answers who we are and whether we are ready.
type identityService struct {
	csi.UnimplementedIdentityServer
	name, version string
	// controller is set when this process serves the Controller service (with online
	// expansion); its readiness (the RDS answered recently) is the process's.
	controller interface{ ready() bool }
}

func (s *identityService) GetPluginInfo(context.Context, *csi.GetPluginInfoRequest) (*csi.GetPluginInfoResponse, error) {
	return &csi.GetPluginInfoResponse{Name: s.name, VendorVersion: s.version}, nil
}

func (s *identityService) GetPluginCapabilities(context.Context, *csi.GetPluginCapabilitiesRequest) (*csi.GetPluginCapabilitiesResponse, error) {
	if s.controller == nil {
		return &csi.GetPluginCapabilitiesResponse{}, nil
	}
	return &csi.GetPluginCapabilitiesResponse{Capabilities: []*csi.PluginCapability{
		{Type: &csi.PluginCapability_Service_{Service: &csi.PluginCapability_Service{Type: csi.PluginCapability_Service_CONTROLLER_SERVICE}}},
		{Type: &csi.PluginCapability_VolumeExpansion_{VolumeExpansion: &csi.PluginCapability_VolumeExpansion{Type: csi.PluginCapability_VolumeExpansion_ONLINE}}},
	}}, nil
}

// Probe reports ready when this process can do its job. Not ready is an answer, not an
// error, so a liveness probe never restart-loops the controller while the RDS is down.
func (s *identityService) Probe(context.Context, *csi.ProbeRequest) (*csi.ProbeResponse, error) {
	ready := true
	if s.controller != nil {
		ready = s.controller.ready()
	}
	return &csi.ProbeResponse{Ready: wrapperspb.Bool(ready)}, nil
}

// metrics holds every collector, on a registry of its own so tests can build many drivers.
// A scrape does no I/O: values are pushed by the code that already did the work.
type metrics struct {
	registry                                                   *prometheus.Registry
	rpcTotal, routerosErrors, nvmeOperations, healsTotal       *prometheus.CounterVec
	rpcDuration, routerosDuration                              *prometheus.HistogramVec
	poolSizeBytes, poolFreeBytes, volumeNVMeState, volumePaths *prometheus.GaugeVec
	rdsConnected, breakersOpen, unownedSubsystems              prometheus.Gauge
	staleMountsTotal, migrationTimeouts                        prometheus.Counter
}

func newMetrics() *metrics {
	r := prometheus.NewRegistry()
	r.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return &metrics{
		registry:          r,
		rpcTotal:          register(r, prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: metricsNamespace, Name: "rpc_total", Help: "CSI RPCs served, by method and gRPC code."}, []string{"method", "code"})),
		rpcDuration:       register(r, prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: metricsNamespace, Name: "rpc_duration_seconds", Help: "CSI RPC latency, by method and gRPC code.", Buckets: prometheus.ExponentialBuckets(0.001, 2.5, 12)}, []string{"method", "code"})),
		routerosDuration:  register(r, prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: metricsNamespace, Name: "routeros_command_duration_seconds", Help: "RouterOS operation latency over SSH, by operation.", Buckets: prometheus.ExponentialBuckets(0.005, 2.5, 10)}, []string{"operation"})),
		routerosErrors:    register(r, prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: metricsNamespace, Name: "routeros_command_errors_total", Help: "RouterOS operations that failed, by operation and error kind."}, []string{"operation", "kind"})),
		rdsConnected:      register(r, prometheus.NewGauge(prometheus.GaugeOpts{Namespace: metricsNamespace, Name: "rds_ssh_connected", Help: "1 while the SSH connection to the RDS is up."})),
		poolSizeBytes:     register(r, prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: metricsNamespace, Name: "pool_size_bytes", Help: "Pool size from the last successful capacity query."}, []string{"pool"})),
		poolFreeBytes:     register(r, prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: metricsNamespace, Name: "pool_free_bytes", Help: "Pool free space from the last successful capacity query."}, []string{"pool"})),
		nvmeOperations:    register(r, prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: metricsNamespace, Name: "nvme_operations_total", Help: "NVMe/TCP connects, disconnects and rescans, by result."}, []string{"operation", "result"})),
		volumeNVMeState:   register(r, prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: metricsNamespace, Name: "volume_nvme_controller_live", Help: "Per staged volume: 1 when an NVMe controller of it is live, 0 otherwise."}, []string{"volume_id"})),
		volumePaths:       register(r, prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: metricsNamespace, Name: "volume_nvme_paths", Help: "Per staged volume: its NVMe/TCP paths, configured (in use: 1 with native multipath off) and live."}, []string{"volume_id", "state"})),
		healsTotal:        register(r, prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: metricsNamespace, Name: "heals_total", Help: "Stale staged volumes the node reconnected and remounted, by result."}, []string{"result"})),
		staleMountsTotal:  register(r, prometheus.NewCounter(prometheus.CounterOpts{Namespace: metricsNamespace, Name: "stale_mounts_total", Help: "Mounts found on a device that no longer backs their volume."})),
		breakersOpen:      register(r, prometheus.NewGauge(prometheus.GaugeOpts{Namespace: metricsNamespace, Name: "breakers_open", Help: "Volumes whose staging circuit breaker is open."})),
		unownedSubsystems: register(r, prometheus.NewGauge(prometheus.GaugeOpts{Namespace: metricsNamespace, Name: "unowned_subsystems", Help: "Managed NVMe subsystems connected on this node that no staged volume claims and nothing proves this driver connected (left alone)."})),
		migrationTimeouts: register(r, prometheus.NewCounter(prometheus.CounterOpts{Namespace: metricsNamespace, Name: "migration_timeouts_total", Help: "Block volumes that stayed published to two nodes longer than migrationTimeoutSeconds."})),
	}
}

const metricsNamespace = "rds_csi"

func register[C prometheus.Collector](r *prometheus.Registry, c C) C {
	r.MustRegister(c)
	return c
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
