// Command rds-csi is a CSI driver for MikroTik ROSE Data Server (RDS) storage: the
// controller manages file-backed disks on the RDS over SSH, the node plugin attaches them
// over NVMe/TCP through the kernel's own fabrics interface.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

func main() {
	os.Exit(run(os.Args[1:], os.Getenv, os.Stdout, os.Stderr))
}

// run is main without the process exit, so tests can drive it. Exit codes: 0 ok, 1 a
// runtime failure, 2 bad configuration.
func run(args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "doctor" {
		return runDoctor(args[1:], getenv, stdout, stderr)
	}
	cfg, err := parseConfig(args, getenv, stdout)
	if errors.Is(err, errHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "rds-csi: %v\n", err)
		return 2
	}
	if cfg.ShowVersion {
		fmt.Fprintf(stdout, "rds-csi %s\n", version)
		return 0
	}
	if err := cfg.validate(); err != nil {
		fmt.Fprintf(stderr, "rds-csi: %v\n", err)
		return 2
	}
	log := newLogger(stderr, cfg.LogFormat, cfg.LogLevel)
	slog.SetDefault(log)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := serve(ctx, cfg, log); err != nil {
		log.Error("rds-csi stopped", "err", err)
		return 1
	}
	return 0
}

// serve runs the driver until ctx ends, then shuts down in order: stop accepting, finish
// in-flight RPCs (bounded), stop background work, remove the socket.
func serve(ctx context.Context, cfg *Config, log *slog.Logger) error {
	log.Info("starting rds-csi", "version", version, "mode", cfg.Mode, "driver", cfg.DriverName, "node_id", cfg.NodeID)
	m := newMetrics()
	path, err := socketPath(cfg.Endpoint)
	if err != nil {
		return err
	}
	bg, stopBackground := context.WithCancel(context.Background())
	defer stopBackground()
	srv := grpc.NewServer(grpc.UnaryInterceptor(rpcInterceptor(log, m)))
	identity := &identityService{name: cfg.DriverName, version: version}
	var services []interface {
		run(context.Context)
		close()
	}
	if cfg.runsController() {
		ctrl, err := newControllerService(cfg, log, m)
		if err != nil {
			return err
		}
		csi.RegisterControllerServer(srv, ctrl)
		identity.controller, services = ctrl, append(services, ctrl)
	}
	if cfg.runsNode() {
		node, err := newNodeService(cfg, log, m)
		if err != nil {
			return err
		}
		csi.RegisterNodeServer(srv, node)
		services = append(services, node)
	}
	csi.RegisterIdentityServer(srv, identity)
	lis, err := listenUnix(path)
	if err != nil {
		return err
	}
	defer os.Remove(path)
	var ms *metricsServer
	if cfg.MetricsAddress != "" {
		if ms, err = startMetricsServer(cfg.MetricsAddress, m, log); err != nil {
			lis.Close()
			return fmt.Errorf("metrics listener %s: %w (change --metrics-address, or set it empty to disable)", cfg.MetricsAddress, err)
		}
		ms.serving.Store(true)
	}
	defer ms.shutdown()
	for _, s := range services {
		go s.run(bg)
	}
	log.Info("serving CSI", "endpoint", path)
	err = serveUntil(ctx, srv, lis, cfg.ShutdownTimeout, log)
	ms.shutdown()
	stopBackground()
	for _, s := range services {
		s.close()
	}
	log.Info("stopped")
	return err
}

func parseLevel(s string) (slog.Level, error) {
	switch strings.ToLower(s) {
	case "debug":
		return slog.LevelDebug, nil
	case "info", "":
		return slog.LevelInfo, nil
	case "warn", "warning":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("--log-level %q is not valid: use debug, info, warn or error", s)
}

// newLogger builds the process logger from validated settings.
func newLogger(w io.Writer, format, level string) *slog.Logger {
	lvl, _ := parseLevel(level)
	opts := &slog.HandlerOptions{Level: lvl}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

const redacted = "***redacted***"

// redactSecrets returns a copy of msg, for logs, with the values of every map field named
// "secrets", at any depth, replaced.
func redactSecrets(msg proto.Message) proto.Message {
	if msg == nil {
		return nil
	}
	c := proto.Clone(msg)
	redactMessage(c.ProtoReflect())
	return c
}

func redactMessage(m protoreflect.Message) {
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsMap() && fd.Name() == "secrets":
			mp := m.Mutable(fd).Map()
			mp.Range(func(k protoreflect.MapKey, _ protoreflect.Value) bool {
				mp.Set(k, protoreflect.ValueOfString(redacted))
				return true
			})
		case fd.IsMap():
			if fd.MapValue().Kind() == protoreflect.MessageKind {
				v.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool {
					redactMessage(mv.Message())
					return true
				})
			}
		case fd.IsList():
			if fd.Kind() == protoreflect.MessageKind {
				l := v.List()
				for i := 0; i < l.Len(); i++ {
					redactMessage(l.Get(i).Message())
				}
			}
		case fd.Kind() == protoreflect.MessageKind:
			redactMessage(v.Message())
		}
		return true
	})
}
