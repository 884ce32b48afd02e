package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
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
	if r, ok := req.(interface{ GetVolumeId() string }); ok && r.GetVolumeId() != "" {
		attrs = append(attrs, "volume_id", r.GetVolumeId())
	}
	if r, ok := req.(interface{ GetSnapshotId() string }); ok && r.GetSnapshotId() != "" {
		attrs = append(attrs, "snapshot_id", r.GetSnapshotId())
	}
	if r, ok := req.(interface{ GetSourceVolumeId() string }); ok && r.GetSourceVolumeId() != "" {
		attrs = append(attrs, "volume_id", r.GetSourceVolumeId())
	}
	if r, ok := req.(interface{ GetName() string }); ok && r.GetName() != "" {
		attrs = append(attrs, "name", r.GetName())
	}
	if r, ok := req.(interface{ GetNodeId() string }); ok && r.GetNodeId() != "" {
		attrs = append(attrs, "node_id", r.GetNodeId())
	}
	return attrs
}

// rpcInterceptor logs every call (method, subject, duration, code; never secrets), records
// metrics, and turns a panic in a handler into Internal so one bug cannot crash the node
// plugin under every volume on the node.
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
		// Stop closes every connection and cancels the calls' contexts; a handler stuck in
		// a syscall may still run, but the process is exiting and must not wait for it.
		srv.Stop()
	}
	return nil
}

// identityService answers who we are and whether we are ready.
type identityService struct {
	csi.UnimplementedIdentityServer
	name, version string
	// controller is set when this process serves the Controller service; its readiness
	// (the RDS answered recently) is the process's readiness.
	controller interface{ ready() bool }
	// onlineExpansion is advertised once the controller supports ControllerExpandVolume.
	onlineExpansion bool
}

func (s *identityService) GetPluginInfo(context.Context, *csi.GetPluginInfoRequest) (*csi.GetPluginInfoResponse, error) {
	return &csi.GetPluginInfoResponse{Name: s.name, VendorVersion: s.version}, nil
}

func (s *identityService) GetPluginCapabilities(context.Context, *csi.GetPluginCapabilitiesRequest) (*csi.GetPluginCapabilitiesResponse, error) {
	var caps []*csi.PluginCapability
	if s.controller != nil {
		caps = append(caps, &csi.PluginCapability{Type: &csi.PluginCapability_Service_{
			Service: &csi.PluginCapability_Service{Type: csi.PluginCapability_Service_CONTROLLER_SERVICE}}})
	}
	if s.onlineExpansion {
		caps = append(caps, &csi.PluginCapability{Type: &csi.PluginCapability_VolumeExpansion_{
			VolumeExpansion: &csi.PluginCapability_VolumeExpansion{Type: csi.PluginCapability_VolumeExpansion_ONLINE}}})
	}
	return &csi.GetPluginCapabilitiesResponse{Capabilities: caps}, nil
}

// Probe reports ready when this process can do its job: for a controller, the RDS answered
// recently. Not ready is an answer, not an error, so a liveness probe never restart-loops
// the controller while the RDS is down.
func (s *identityService) Probe(context.Context, *csi.ProbeRequest) (*csi.ProbeResponse, error) {
	ready := true
	if s.controller != nil {
		ready = s.controller.ready()
	}
	return &csi.ProbeResponse{Ready: wrapperspb.Bool(ready)}, nil
}
