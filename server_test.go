package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

var discardLog = slog.New(slog.NewTextHandler(io.Discard, nil))

func dialSocket(t *testing.T, path string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+path, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func waitForSocket(t *testing.T, path string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.Dial("unix", path); err == nil {
			c.Close()
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("socket %s never served", path)
}

// shortTempDir keeps socket paths under the 108-byte sun_path limit.
func shortTempDir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("", "rdscsi")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

func TestNodeModeServesIdentityOverUnixSocket(t *testing.T) {
	dir := shortTempDir(t)
	sock := filepath.Join(dir, "sub", "csi.sock")
	cfg, err := parseConfig([]string{"--mode=node", "--managed-nqn-prefix=" + validPrefix, "--endpoint=unix://" + sock,
		"--metrics-address=127.0.0.1:0", "--node-id=n1", "--state-dir=" + filepath.Join(dir, "state"),
		"--sysfs-root=" + filepath.Join(dir, "sys"), "--dev-root=" + filepath.Join(dir, "dev"), "--nvme-host-dir=" + filepath.Join(dir, "etc-nvme")}, envOf(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.validate(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve(ctx, cfg, discardLog) }()
	waitForSocket(t, sock)

	id := csi.NewIdentityClient(dialSocket(t, sock))
	info, err := id.GetPluginInfo(context.Background(), &csi.GetPluginInfoRequest{})
	if err != nil || info.Name != "rds.csi.srvlab.io" || info.VendorVersion != version {
		t.Fatalf("GetPluginInfo = %v, %v", info, err)
	}
	caps, err := id.GetPluginCapabilities(context.Background(), &csi.GetPluginCapabilitiesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range caps.Capabilities {
		if c.GetService().GetType() == csi.PluginCapability_Service_CONTROLLER_SERVICE {
			t.Error("node-only mode advertises CONTROLLER_SERVICE")
		}
	}
	probe, err := id.Probe(context.Background(), &csi.ProbeRequest{})
	if err != nil || !probe.GetReady().GetValue() {
		t.Fatalf("Probe = %v, %v; a node is ready once serving", probe, err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("serve: %v", err)
	}
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Errorf("socket still there after shutdown: %v", err)
	}
}

// slowController answers CreateVolume after a delay, to stand in for an in-flight RPC.
type slowController struct {
	csi.UnimplementedControllerServer
	delay   time.Duration
	started chan struct{}
}

func (s *slowController) CreateVolume(ctx context.Context, r *csi.CreateVolumeRequest) (*csi.CreateVolumeResponse, error) {
	close(s.started)
	time.Sleep(s.delay)
	return &csi.CreateVolumeResponse{Volume: &csi.Volume{VolumeId: r.Name}}, nil
}

func TestInFlightRPCFinishesAfterShutdownBegins(t *testing.T) {
	sock := filepath.Join(shortTempDir(t), "csi.sock")
	lis, err := listenUnix(sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.UnaryInterceptor(rpcInterceptor(discardLog, newMetrics())))
	slow := &slowController{delay: 500 * time.Millisecond, started: make(chan struct{})}
	csi.RegisterControllerServer(srv, slow)
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- serveUntil(ctx, srv, lis, 5*time.Second, discardLog) }()

	ctrl := csi.NewControllerClient(dialSocket(t, sock))
	result := make(chan error, 1)
	go func() {
		resp, err := ctrl.CreateVolume(context.Background(), &csi.CreateVolumeRequest{Name: "pvc-1"})
		if err == nil && resp.Volume.VolumeId != "pvc-1" {
			err = status.Error(codes.Internal, "wrong volume")
		}
		result <- err
	}()
	<-slow.started
	cancel() // what SIGTERM does in run()
	if err := <-result; err != nil {
		t.Fatalf("in-flight CreateVolume failed during shutdown: %v", err)
	}
	if err := <-served; err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Errorf("socket file survived shutdown: %v", err)
	}
}

func TestShutdownIsBoundedWhenAnRPCHangs(t *testing.T) {
	sock := filepath.Join(shortTempDir(t), "csi.sock")
	lis, err := listenUnix(sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	slow := &slowController{delay: time.Hour, started: make(chan struct{})}
	csi.RegisterControllerServer(srv, slow)
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- serveUntil(ctx, srv, lis, 200*time.Millisecond, discardLog) }()
	go func() {
		_, _ = csi.NewControllerClient(dialSocket(t, sock)).CreateVolume(context.Background(), &csi.CreateVolumeRequest{Name: "x"})
	}()
	<-slow.started
	cancel()
	select {
	case <-served:
	case <-time.After(5 * time.Second):
		t.Fatal("shutdown not bounded by the grace period")
	}
}

// panicky panics in GetPluginInfo and answers Probe normally.
type panicky struct {
	csi.UnimplementedIdentityServer
}

func (panicky) GetPluginInfo(context.Context, *csi.GetPluginInfoRequest) (*csi.GetPluginInfoResponse, error) {
	var m map[string]int
	m["boom"]++ // nil map write: a real bug shape
	return nil, nil
}
func (panicky) Probe(context.Context, *csi.ProbeRequest) (*csi.ProbeResponse, error) {
	return &csi.ProbeResponse{}, nil
}

func TestPanicBecomesInternalAndServerKeepsServing(t *testing.T) {
	sock := filepath.Join(shortTempDir(t), "csi.sock")
	lis, err := listenUnix(sock)
	if err != nil {
		t.Fatal(err)
	}
	var logBuf bytes.Buffer
	srv := grpc.NewServer(grpc.UnaryInterceptor(rpcInterceptor(slog.New(slog.NewTextHandler(&logBuf, nil)), newMetrics())))
	csi.RegisterIdentityServer(srv, panicky{})
	go func() { _ = srv.Serve(lis) }()
	defer srv.Stop()
	id := csi.NewIdentityClient(dialSocket(t, sock))
	_, err = id.GetPluginInfo(context.Background(), &csi.GetPluginInfoRequest{})
	if status.Code(err) != codes.Internal || !strings.Contains(err.Error(), "GetPluginInfo") {
		t.Fatalf("got %v, want Internal naming the method", err)
	}
	if _, err := id.Probe(context.Background(), &csi.ProbeRequest{}); err != nil {
		t.Fatalf("server stopped serving after a panic: %v", err)
	}
	if !strings.Contains(logBuf.String(), "handler panicked") {
		t.Errorf("panic not logged: %s", logBuf.String())
	}
}

func TestInterceptorNeverLogsSecrets(t *testing.T) {
	var logBuf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logBuf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	icpt := rpcInterceptor(log, newMetrics())
	req := &csi.NodeStageVolumeRequest{VolumeId: "pvc-9", Secrets: map[string]string{"password": "hunter2"}}
	_, err := icpt(context.Background(), req, &grpc.UnaryServerInfo{FullMethod: "/csi.v1.Node/NodeStageVolume"},
		func(ctx context.Context, _ any) (any, error) { return nil, status.Error(codes.NotFound, "nope") })
	if status.Code(err) != codes.NotFound {
		t.Fatalf("err = %v", err)
	}
	out := logBuf.String()
	if strings.Contains(out, "hunter2") {
		t.Fatalf("secret in log: %s", out)
	}
	for _, want := range []string{"method=NodeStageVolume", "volume_id=pvc-9", "code=NotFound", "duration="} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q: %s", want, out)
		}
	}
	if req.Secrets["password"] != "hunter2" {
		t.Error("redaction modified the request itself")
	}
}

func TestRedactSecretsAtAnyDepth(t *testing.T) {
	req := &csi.CreateVolumeRequest{Name: "v", Secrets: map[string]string{"k": "s1"},
		MutableParameters: map[string]string{"p": "visible"}}
	got := redactSecrets(req).(*csi.CreateVolumeRequest)
	if got.Secrets["k"] != redacted || got.MutableParameters["p"] != "visible" || req.Secrets["k"] != "s1" {
		t.Fatalf("redaction wrong: %v (original %v)", got, req)
	}
}

func TestListenUnixRefusesLiveSocketsAndNonSockets(t *testing.T) {
	dir := shortTempDir(t)
	live := filepath.Join(dir, "live.sock")
	l, err := listenUnix(live)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if _, err := listenUnix(live); err == nil || !strings.Contains(err.Error(), "another running process") {
		t.Errorf("second listener on a live socket: %v", err)
	}
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, []byte("data"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := listenUnix(file); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("listening over a regular file: %v", err)
	}
	if b, _ := os.ReadFile(file); string(b) != "data" {
		t.Error("a regular file was touched")
	}
	// A stale socket (no process behind it) is replaced.
	stale := filepath.Join(dir, "stale.sock")
	ul, err := net.ListenUnix("unix", &net.UnixAddr{Name: stale, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ul.SetUnlinkOnClose(false)
	ul.Close()
	l2, err := listenUnix(stale)
	if err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	l2.Close()
}

func TestHealthzFollowsServingState(t *testing.T) {
	ms, err := startMetricsServer("127.0.0.1:0", newMetrics(), discardLog)
	if err != nil {
		t.Fatal(err)
	}
	ms.serving.Store(true)
	lisAddr := ms.listenAddr
	get := func(path string) int {
		resp, err := http.Get("http://" + lisAddr + path)
		if err != nil {
			return -1
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := get("/healthz"); code != 200 {
		t.Fatalf("/healthz = %d while serving", code)
	}
	if code := get("/metrics"); code != 200 {
		t.Fatalf("/metrics = %d", code)
	}
	ms.serving.Store(false)
	if code := get("/healthz"); code != http.StatusServiceUnavailable {
		t.Fatalf("/healthz = %d after shutdown began", code)
	}
	ms.shutdown()
}

// TestBinarySIGTERM builds the real binary and checks the signal path end to end: it serves
// Identity, exits 0 on SIGTERM and removes its socket.
func TestBinarySIGTERM(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	dir := shortTempDir(t)
	bin := filepath.Join(dir, "rds-csi")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	sock := filepath.Join(dir, "x.sock")
	cmd := exec.Command(bin, "--mode=node", "--managed-nqn-prefix="+validPrefix, "--endpoint="+sock, "--metrics-address=",
		"--state-dir="+filepath.Join(dir, "state"), "--sysfs-root="+filepath.Join(dir, "sys"), "--dev-root="+filepath.Join(dir, "dev"),
		"--nvme-host-dir="+filepath.Join(dir, "etc-nvme"))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	waitForSocket(t, sock)
	info, err := csi.NewIdentityClient(dialSocket(t, sock)).GetPluginInfo(context.Background(), &csi.GetPluginInfoRequest{})
	if err != nil || info.Name != defaultDriverName {
		t.Fatalf("GetPluginInfo = %v, %v", info, err)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("exit after SIGTERM: %v\n%s", err, stderr.String())
	}
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Errorf("socket left behind: %v", err)
	}
}

// The README documents these names; dashboards and alerts depend on them.
func TestMetricNamesAreStableAndDocumented(t *testing.T) {
	m := newMetrics()
	m.observeRPC("CreateVolume", "OK", time.Millisecond)
	m.observeRouterOS("CreateDisk", time.Millisecond, "no_space")
	m.observeNVMe("connect", errors.New("refused"))
	m.volumeNVMeState.WithLabelValues("pvc-1").Set(1)
	m.volumePaths.WithLabelValues("pvc-1", "live").Set(2)
	m.healsTotal.WithLabelValues("ok").Inc()
	m.poolSizeBytes.WithLabelValues("storage-pool").Set(1)
	m.poolFreeBytes.WithLabelValues("storage-pool").Set(1)
	families, err := m.registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, f := range families {
		got[f.GetName()] = true
	}
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{
		"rds_csi_rpc_total", "rds_csi_rpc_duration_seconds", "rds_csi_routeros_command_duration_seconds",
		"rds_csi_routeros_command_errors_total", "rds_csi_rds_ssh_connected", "rds_csi_pool_size_bytes",
		"rds_csi_pool_free_bytes", "rds_csi_nvme_operations_total", "rds_csi_volume_nvme_controller_live", "rds_csi_volume_nvme_paths",
		"rds_csi_heals_total", "rds_csi_stale_mounts_total", "rds_csi_breakers_open", "rds_csi_migration_timeouts_total",
		"go_goroutines", "process_resident_memory_bytes",
	} {
		if !got[name] {
			t.Errorf("metric %s is not exported", name)
		}
		if strings.HasPrefix(name, "rds_csi_") && !strings.Contains(string(readme), name) {
			t.Errorf("metric %s is not documented in README.md", name)
		}
	}
}
