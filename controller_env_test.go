package main

import (
	"context"
	"net"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"srvlab.io/rds-csi/routeros"
	"srvlab.io/rds-csi/routeros/sim"
)

// testVolumePath is the default --rds-volume-path, in the simulator's default pool.
const testVolumePath = "/storage-pool/metal-csi"

// ctrlEnv is a controller wired to a simulated RDS over real SSH.
type ctrlEnv struct {
	t   testing.TB
	sim *sim.TestServer
	c   *controllerService
	m   *metrics
	// inRouterOS sums the time spent inside routeros operations (the Observe hook).
	inRouterOS atomic.Int64
}

type envSetup struct {
	sim    sim.Options
	cfg    func(*Config)
	source attachmentLister
}

type envOption func(*envSetup)

func withSim(o sim.Options) envOption                { return func(s *envSetup) { s.sim = o } }
func withConfig(f func(*Config)) envOption           { return func(s *envSetup) { s.cfg = f } }
func withAttachments(src attachmentLister) envOption { return func(s *envSetup) { s.source = src } }

func newCtrlEnv(t testing.TB, opts ...envOption) *ctrlEnv {
	t.Helper()
	var setup envSetup
	for _, o := range opts {
		o(&setup)
	}
	ts := sim.StartTest(t, setup.sim)
	host, port, _ := net.SplitHostPort(ts.Addr)
	sshPort, _ := strconv.Atoi(port)
	cfg := &Config{
		DriverName: defaultDriverName, RDSAddress: host, RDSSSHPort: sshPort, RDSUser: ts.User,
		RDSKeyFile: ts.KeyFile, RDSKnownHosts: ts.KnownHostsFile, RDSVolumePath: testVolumePath,
		RDSMaxSessions: 4, RDSCommandTimeout: 20 * time.Second,
	}
	if setup.cfg != nil {
		setup.cfg(cfg)
	}
	e := &ctrlEnv{t: t, sim: ts, m: newMetrics()}
	rc := rdsClientConfig(cfg, discardLog, e.m)
	observe := rc.Observe
	rc.Observe = func(op string, d time.Duration, err error) {
		e.inRouterOS.Add(int64(d))
		observe(op, d, err)
	}
	rc.RedialBackoff = 20 * time.Millisecond // fault tests reconnect at once
	var err error
	if e.c, err = newController(cfg, discardLog, e.m, rc, setup.source); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.c.close)
	quickCopies(e.c.copies)
	return e
}

// ctx is a test call's context: bounded, so a hung call fails the test instead of hanging.
func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

var rwo = mountCap(csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER, "")

func createReq(name string, size int64, caps ...*csi.VolumeCapability) *csi.CreateVolumeRequest {
	if len(caps) == 0 {
		caps = []*csi.VolumeCapability{rwo}
	}
	return &csi.CreateVolumeRequest{Name: name, VolumeCapabilities: caps, CapacityRange: &csi.CapacityRange{RequiredBytes: size}}
}

// mustCreate creates a volume and fails the test on error.
func (e *ctrlEnv) mustCreate(req *csi.CreateVolumeRequest) *csi.Volume {
	e.t.Helper()
	resp, err := e.c.CreateVolume(testCtx(e.t), req)
	if err != nil {
		e.t.Fatalf("CreateVolume(%s): %v", req.Name, err)
	}
	return resp.Volume
}

// disk returns the simulator's view of a slot (nil when absent), asked over its own CLI
// rather than through the controller's client.
func (e *ctrlEnv) disk(slot string) *routeros.Disk {
	e.t.Helper()
	out, err := e.sim.Exec(context.Background(), `/disk print detail where slot="`+slot+`"`)
	if err != nil {
		e.t.Fatal(err)
	}
	items, err := routeros.ParseDetail(out)
	if err != nil {
		e.t.Fatal(err)
	}
	var found []routeros.Item
	for _, it := range items {
		if it.Props["slot"] == slot {
			found = append(found, it)
		}
	}
	switch len(found) {
	case 0:
		return nil
	case 1:
		size, _ := strconv.ParseInt(strings.ReplaceAll(found[0].Props["size"], " ", ""), 10, 64)
		return &routeros.Disk{Slot: slot, FilePath: found[0].Props["file-path"], Size: size,
			NVMeExport: found[0].Props["nvme-tcp-export"] == "yes"}
	}
	e.t.Fatalf("the simulator has %d disks with slot %s", len(found), slot)
	return nil
}

// volumeFiles lists the regular files in the simulator's volume directory.
func (e *ctrlEnv) volumeFiles() []string {
	e.t.Helper()
	entries, err := os.ReadDir(e.sim.HostPath(testVolumePath))
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		e.t.Fatal(err)
	}
	var names []string
	for _, de := range entries {
		if de.Type().IsRegular() {
			names = append(names, de.Name())
		}
	}
	return names
}

func fileExists(t testing.TB, p string) bool {
	t.Helper()
	_, err := os.Stat(p)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return err == nil
}

// wantCode fails the test unless err has the code and its message holds every part.
func wantCode(t testing.TB, err error, code codes.Code, parts ...string) {
	t.Helper()
	if status.Code(err) != code {
		t.Fatalf("got %v (%v), want %v", status.Code(err), err, code)
	}
	for _, p := range parts {
		if !strings.Contains(status.Convert(err).Message(), p) {
			t.Errorf("message %q does not mention %q", status.Convert(err).Message(), p)
		}
	}
}

// serve serves the controller (with the driver's interceptor), identity and, when given, a
// node service on a unix socket until the test ends, and returns the socket's address.
func (e *ctrlEnv) serve(node csi.NodeServer) string {
	e.t.Helper()
	dir, err := os.MkdirTemp("", "rdscsi") // short: unix socket paths are limited to 108 bytes
	if err != nil {
		e.t.Fatal(err)
	}
	sock := dir + "/csi.sock"
	srv := grpc.NewServer(grpc.UnaryInterceptor(rpcInterceptor(discardLog, e.m)))
	csi.RegisterControllerServer(srv, e.c)
	csi.RegisterIdentityServer(srv, &identityService{name: defaultDriverName, version: "test", controller: e.c, onlineExpansion: true})
	if node != nil {
		csi.RegisterNodeServer(srv, node)
	}
	lis, err := net.Listen("unix", sock)
	if err != nil {
		e.t.Fatal(err)
	}
	go func() { _ = srv.Serve(lis) }()
	e.t.Cleanup(func() {
		srv.Stop()
		os.RemoveAll(dir)
	})
	return "unix://" + sock
}

// dial connects a CSI client to an address from serve.
func dial(t testing.TB, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}
