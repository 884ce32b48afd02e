package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/kubernetes-csi/csi-test/v5/pkg/sanity"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"srvlab.io/rds-csi/routeros"
	"srvlab.io/rds-csi/routeros/sim"
	"srvlab.io/rds-csi/test/e2e/sanityrun"
)

// newControllerService is what main calls: configuration in, a controller that reaches the
// RDS and picks its attachment source (kubeconfig, in-cluster, or none) out.
func TestControllerServiceFromConfig(t *testing.T) {
	ts := sim.StartTest(t, sim.Options{})
	kube := startFakeKube(t)
	kube.addNode("node-1", "node-1")
	kubeconfig := kube.kubeconfigFile(t)
	badKubeconfig := filepath.Join(t.TempDir(), "bad")
	if err := os.WriteFile(badKubeconfig, []byte(`{"clusters": []}`), 0o600); err != nil {
		t.Fatal(err)
	}
	yamlKubeconfig := filepath.Join(t.TempDir(), "yaml")
	if err := os.WriteFile(yamlKubeconfig, []byte("apiVersion: v1\nkind: Config\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	host, port, _ := strings.Cut(ts.Addr, ":")
	base := []string{"--mode=controller", "--rds-address=" + host, "--rds-ssh-port=" + port, "--rds-user=" + ts.User,
		"--rds-key-file=" + ts.KeyFile, "--rds-known-hosts=" + ts.KnownHostsFile}
	tests := []struct {
		name      string
		args      []string
		wantErr   string
		withNodes bool // a Kubernetes API is configured: node IDs are checked
	}{
		{"out of a cluster", nil, "", false},
		{"kubeconfig", []string{"--kubeconfig=" + kubeconfig}, "", true},
		{"broken kubeconfig", []string{"--kubeconfig=" + badKubeconfig}, "no current-context", false},
		{"YAML kubeconfig", []string{"--kubeconfig=" + yamlKubeconfig}, "kubectl config view --raw --minify --flatten -o json", false},
		{"bad volume path", []string{"--rds-volume-path=storage-pool/x"}, "--rds-volume-path", false},
		{"bad allowed path", []string{"--rds-allowed-paths=/ok/a,/bad dir"}, "--rds-allowed-paths", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("KUBERNETES_SERVICE_HOST", "") // never pick up a real cluster
			cfg, err := parseConfig(append(append([]string{}, base...), tc.args...), envOf(nil), io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			if err := cfg.validate(); err != nil {
				t.Fatal(err)
			}
			c, err := newControllerService(cfg, discardLog, newMetrics())
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("got %v, want an error naming %s", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer c.close()
			if (c.nodes != nil) != tc.withNodes {
				t.Errorf("node checks configured: %v, want %v", c.nodes != nil, tc.withNodes)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { c.run(ctx); close(done) }()
			defer func() { cancel(); <-done }()
			deadline := time.Now().Add(10 * time.Second)
			for !c.ready() || !c.fencing.isRebuilt() {
				if time.Now().After(deadline) {
					t.Fatalf("not ready (RDS %v, fencing rebuilt %v)", c.ready(), c.fencing.isRebuilt())
				}
				time.Sleep(10 * time.Millisecond)
			}
			vol, err := c.CreateVolume(testCtx(t), createReq("pvc-main", 1<<30))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := c.ControllerPublishVolume(testCtx(t), &csi.ControllerPublishVolumeRequest{VolumeId: vol.Volume.VolumeId, NodeId: "node-1", VolumeCapability: rwo}); err != nil {
				t.Fatal(err)
			}
			if caps, _ := (&identityService{controller: c}).GetPluginCapabilities(testCtx(t), nil); caps.GetCapabilities()[1].GetVolumeExpansion().GetType() != csi.PluginCapability_VolumeExpansion_ONLINE {
				t.Error("online expansion not advertised")
			}
			c.fencing.unpublish(vol.Volume.VolumeId, "node-1")
			if _, err := c.DeleteVolume(testCtx(t), &csi.DeleteVolumeRequest{VolumeId: vol.Volume.VolumeId}); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// paramsController is a controller with just the configuration parameter checks read.
func paramsController(t *testing.T, allowed ...string) *controllerService {
	t.Helper()
	cfg := &Config{RDSAddress: "10.0.0.5", RDSVolumePath: testVolumePath, RDSAllowedPaths: allowed}
	bases, err := volumeBases(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return &controllerService{cfg: cfg, bases: bases}
}

func TestControllerParameters(t *testing.T) {
	tests := []struct {
		name    string
		params  map[string]string
		allowed []string
		// want: the volume context entries expected (checked when the parameters are valid)
		want  map[string]string
		parts []string // InvalidArgument naming these
	}{
		{"defaults", nil, nil, map[string]string{"nqn": "nqn.2000-02.com.mikrotik:pvc-1", "volumePath": testVolumePath, "nvmeAddress": "10.0.0.5", "nvmePort": "4420",
			"ctrlLossTmo": "-1", "reconnectDelay": "5", "migrationTimeoutSeconds": "300"}, nil},
		{"every parameter", map[string]string{"volumePath": testVolumePath + "/db", "nvmeAddress": "192.168.88.2", "nvmePort": "4421",
			"ctrlLossTmo": "600", "reconnectDelay": "2", "keepAliveTmo": "10", "fastIoFailTmo": "-1", "nrIoQueues": "4", "queueSize": "128",
			"migrationTimeoutSeconds": "30"}, nil,
			map[string]string{"volumePath": testVolumePath + "/db", "nvmeAddress": "192.168.88.2", "nvmePort": "4421", "ctrlLossTmo": "600",
				"reconnectDelay": "2", "keepAliveTmo": "10", "fastIoFailTmo": "-1", "nrIoQueues": "4", "queueSize": "128", "migrationTimeoutSeconds": "30"}, nil},
		{"provisioner's own keys are ignored", map[string]string{"csi.storage.k8s.io/pvc/name": "data", "csi.storage.k8s.io/pv/name": "pvc-1"}, nil,
			map[string]string{"volumePath": testVolumePath}, nil},
		{"IPv6 address", map[string]string{"nvmeAddress": "fd00::5"}, nil, map[string]string{"nvmeAddress": "fd00::5"}, nil},
		{"allowed path", map[string]string{"volumePath": "/nvme-pool/vols"}, []string{"/nvme-pool/vols"}, map[string]string{"volumePath": "/nvme-pool/vols"}, nil},
		{"unknown key", map[string]string{"fsType": "xfs"}, nil, nil, []string{`unknown parameter "fsType"`, "volumePath"}},
		{"path outside the bases", map[string]string{"volumePath": "/storage-pool/other"}, nil, nil, []string{"volumePath", "--rds-volume-path", "--rds-allowed-paths"}},
		{"path sharing a prefix, not a component", map[string]string{"volumePath": testVolumePath + "-evil"}, nil, nil, []string{"volumePath"}},
		{"relative path", map[string]string{"volumePath": "storage-pool/metal-csi"}, nil, nil, []string{"volumePath", "clean absolute"}},
		{"trailing slash", map[string]string{"volumePath": testVolumePath + "/"}, nil, nil, []string{"volumePath", "no trailing"}},
		{"dot-dot escape", map[string]string{"volumePath": testVolumePath + "/../other"}, nil, nil, []string{"volumePath"}},
		{"quote in path", map[string]string{"volumePath": testVolumePath + `/a"b`}, nil, nil, []string{"volumePath"}},
		{"host name address", map[string]string{"nvmeAddress": "rds.lan"}, nil, nil, []string{"nvmeAddress", "IP address"}},
		{"unspecified address", map[string]string{"nvmeAddress": "0.0.0.0"}, nil, nil, []string{"nvmeAddress", "unicast"}},
		{"port 0", map[string]string{"nvmePort": "0"}, nil, nil, []string{"nvmePort", "from 1 to 65535"}},
		{"port not a number", map[string]string{"nvmePort": "nvme"}, nil, nil, []string{"nvmePort", "from 1 to 65535"}},
		{"ctrlLossTmo below -1", map[string]string{"ctrlLossTmo": "-2"}, nil, nil, []string{"ctrlLossTmo", "from -1 to 31536000"}},
		{"reconnectDelay 0", map[string]string{"reconnectDelay": "0"}, nil, nil, []string{"reconnectDelay", "from 1 to 3600"}},
		{"keepAliveTmo 0", map[string]string{"keepAliveTmo": "0"}, nil, nil, []string{"keepAliveTmo", "from 1 to 3600", "keep-alive off"}},
		{"fastIoFailTmo too big", map[string]string{"fastIoFailTmo": "3601"}, nil, nil, []string{"fastIoFailTmo", "from -1 to 3600"}},
		{"nrIoQueues 0", map[string]string{"nrIoQueues": "0"}, nil, nil, []string{"nrIoQueues", "from 1 to 1024"}},
		{"queueSize 8", map[string]string{"queueSize": "8"}, nil, nil, []string{"queueSize", "from 16 to 1024"}},
		{"migration timeout too short", map[string]string{"migrationTimeoutSeconds": "29"}, nil, nil, []string{"migrationTimeoutSeconds", "from 30 to 3600"}},
		{"migration timeout too long", map[string]string{"migrationTimeoutSeconds": "3601"}, nil, nil, []string{"migrationTimeoutSeconds", "from 30 to 3600"}},
		{"empty value", map[string]string{"queueSize": ""}, nil, nil, []string{"queueSize"}},
		{"two paths", map[string]string{"nvmeAddresses": "10.0.0.10, 10.0.1.10"}, nil,
			map[string]string{"nvmeAddress": "10.0.0.10", "nvmeAddresses": "10.0.0.10,10.0.1.10"}, nil},
		{"two paths, nvmeAddress their first", map[string]string{"nvmeAddress": "10.0.0.10", "nvmeAddresses": "10.0.0.10,fd00::10"}, nil,
			map[string]string{"nvmeAddress": "10.0.0.10", "nvmeAddresses": "10.0.0.10,fd00::10"}, nil},
		{"one path in nvmeAddresses is plain nvmeAddress", map[string]string{"nvmeAddresses": "10.0.0.10"}, nil,
			map[string]string{"nvmeAddress": "10.0.0.10", "nvmeAddresses": ""}, nil},
		{"four paths", map[string]string{"nvmeAddresses": "10.0.0.1,10.0.0.2,10.0.0.3,10.0.0.4"}, nil,
			map[string]string{"nvmeAddresses": "10.0.0.1,10.0.0.2,10.0.0.3,10.0.0.4"}, nil},
		{"five paths", map[string]string{"nvmeAddresses": "10.0.0.1,10.0.0.2,10.0.0.3,10.0.0.4,10.0.0.5"}, nil, nil, []string{"nvmeAddresses", "5 paths", "at most 4"}},
		{"duplicate path", map[string]string{"nvmeAddresses": "10.0.0.10,10.0.1.10,10.0.0.10"}, nil, nil, []string{"nvmeAddresses", "10.0.0.10 twice"}},
		{"duplicate path, two spellings", map[string]string{"nvmeAddresses": "fd00::1,fd00:0::1"}, nil, nil, []string{"nvmeAddresses", "twice"}},
		{"host name among the paths", map[string]string{"nvmeAddresses": "10.0.0.10,rds-b.lan"}, nil, nil, []string{"nvmeAddresses", `"rds-b.lan"`, "not an IP address"}},
		{"empty path", map[string]string{"nvmeAddresses": "10.0.0.10,"}, nil, nil, []string{"nvmeAddresses", `""`}},
		{"nvmeAddress not the first path", map[string]string{"nvmeAddress": "10.0.1.10", "nvmeAddresses": "10.0.0.10,10.0.1.10"}, nil, nil,
			[]string{"nvmeAddress", "not the first entry of nvmeAddresses"}},
		{"every problem at once", map[string]string{"queueSize": "1", "nvmePort": "-1", "bogus": "x"}, nil, nil, []string{"queueSize", "nvmePort", `"bogus"`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := paramsController(t, tc.allowed...)
			p, err := c.parseParams(tc.params)
			if tc.parts != nil {
				wantCode(t, err, codes.InvalidArgument, tc.parts...)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if err := p.withAddress(c.cfg.RDSAddress); err != nil {
				t.Fatal(err)
			}
			vc := p.volumeContext(&testDisk)
			for k, v := range tc.want {
				if got, ok := vc[k]; got != v || (v != "") != ok {
					t.Errorf("volume context %s = %q, want %q (context %v)", k, vc[k], v, vc)
				}
			}
			for _, optional := range []string{"keepAliveTmo", "fastIoFailTmo", "nrIoQueues", "queueSize"} {
				if _, set := tc.params[optional]; !set {
					if v, ok := vc[optional]; ok {
						t.Errorf("unset %s is in the volume context as %q: the node's default must apply", optional, v)
					}
				}
			}
		})
	}
}

// testDisk is a disk as the RDS reports it after creation, without a port read back.
var testDisk = routeros.Disk{Slot: "pvc-1", NQN: defaultNQN("pvc-1")}

func TestControllerNVMeAddressDefault(t *testing.T) {
	tests := []struct {
		rdsAddress string
		code       codes.Code
		parts      []string
	}{
		{"10.0.0.5", codes.OK, nil},
		{"rds.example.lan", codes.InvalidArgument, []string{"nvmeAddress is not set", `--rds-address "rds.example.lan"`, "set nvmeAddress"}},
	}
	for _, tc := range tests {
		t.Run(tc.rdsAddress, func(t *testing.T) {
			c := paramsController(t)
			c.cfg.RDSAddress = tc.rdsAddress
			p, err := c.parseParams(nil)
			if err != nil {
				t.Fatal(err)
			}
			err = p.withAddress(c.cfg.RDSAddress)
			if tc.code == codes.OK {
				if err != nil || p.nvmeAddress != tc.rdsAddress {
					t.Fatalf("got %q, %v", p.nvmeAddress, err)
				}
				return
			}
			wantCode(t, err, tc.code, tc.parts...)
		})
	}
}

func TestControllerVolumeBases(t *testing.T) {
	tests := []struct {
		volumePath string
		allowed    []string
		bad        string
	}{
		{"/storage-pool/metal-csi", nil, ""},
		{"/storage-pool", []string{"/nvme/a", "/nvme/b"}, ""},
		{"storage-pool/metal-csi", nil, "--rds-volume-path"},
		{"/storage-pool/metal-csi/", nil, "--rds-volume-path"},
		{"/", nil, "--rds-volume-path"},
		{"/storage-pool/metal-csi", []string{"/ok", "/bad path"}, "--rds-allowed-paths"},
	}
	for _, tc := range tests {
		_, err := volumeBases(&Config{RDSVolumePath: tc.volumePath, RDSAllowedPaths: tc.allowed})
		switch {
		case tc.bad == "" && err != nil:
			t.Errorf("%s %v: %v", tc.volumePath, tc.allowed, err)
		case tc.bad != "" && (err == nil || !strings.Contains(err.Error(), tc.bad)):
			t.Errorf("%s %v: got %v, want an error naming %s", tc.volumePath, tc.allowed, err, tc.bad)
		}
	}
}

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
	csi.RegisterIdentityServer(srv, &identityService{name: defaultDriverName, version: "test", controller: e.c})
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

// sanityChildEnv marks the child process that runs the suite: Ginkgo allows one suite run
// per process, and the whole-driver sanity run of the same test binary needs its own.
const sanityChildEnv = "RDS_CSI_CONTROLLER_SANITY_CHILD"

// sanityNodeID is the node the stand-in node service reports; the fake API server lists a
// CSINode for it, so publishing to it works and to any other node ID is NotFound.
const sanityNodeID = "sanity-node"

// TestControllerSanity runs csi-sanity's Controller Service specs against the controller
// served over a unix socket, with the RouterOS simulator behind it and a fake Kubernetes
// API for fencing. Every spec must pass; a spec may be skipped only for a capability the
// controller does not advertise.
func TestControllerSanity(t *testing.T) {
	if os.Getenv(sanityChildEnv) != "" {
		runControllerSanity(t)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestControllerSanity$", "-test.count=1")
	cmd.Env = append(os.Environ(), sanityChildEnv+"=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("csi-sanity controller specs failed: %v\n%s", err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(line, sanitySummaryPrefix) {
			t.Log(line)
			return
		}
	}
	t.Fatalf("the sanity run printed no summary:\n%s", out)
}

const sanitySummaryPrefix = "controller sanity: "

func runControllerSanity(t *testing.T) {
	kube := startFakeKube(t)
	kube.addNode(sanityNodeID, sanityNodeID)
	e := newCtrlEnv(t, withAttachments(kube.api(t)))
	ctx, cancel := context.WithCancel(context.Background())
	running := make(chan struct{})
	go func() { e.c.run(ctx); close(running) }()
	defer func() { cancel(); <-running }()
	deadline := time.Now().Add(10 * time.Second)
	for !e.c.fencing.isRebuilt() {
		if time.Now().After(deadline) {
			t.Fatal("attachment records never rebuilt from the fake API server")
		}
		time.Sleep(10 * time.Millisecond)
	}

	addr := e.serve(sanityNode{})

	dir := t.TempDir()
	cfg := sanity.NewTestConfig()
	cfg.Address = addr
	cfg.TargetPath = filepath.Join(dir, "target")
	cfg.StagingPath = filepath.Join(dir, "staging")
	cfg.TestVolumeSize = 1 << 30
	res, err := sanityrun.Run(t, cfg, `\[Controller Server\]`)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Printf("\n%s%s\n", sanitySummaryPrefix, res)
	if !res.OK() {
		t.Errorf("csi-sanity controller specs: %s", res)
	}
}

// sanityNode stands in for the node service in the controller's sanity run: the
// controller specs ask it for the node ID and clean up through NodeUnpublishVolume.
type sanityNode struct{ csi.UnimplementedNodeServer }

func (sanityNode) NodeGetInfo(context.Context, *csi.NodeGetInfoRequest) (*csi.NodeGetInfoResponse, error) {
	return &csi.NodeGetInfoResponse{NodeId: sanityNodeID}, nil
}

func (sanityNode) NodeGetCapabilities(context.Context, *csi.NodeGetCapabilitiesRequest) (*csi.NodeGetCapabilitiesResponse, error) {
	return &csi.NodeGetCapabilitiesResponse{}, nil
}

func (sanityNode) NodeUnpublishVolume(context.Context, *csi.NodeUnpublishVolumeRequest) (*csi.NodeUnpublishVolumeResponse, error) {
	return &csi.NodeUnpublishVolumeResponse{}, nil
}

// Each simulator fault must reach the CO with the code it acts on and a message that says
// what to do; an RDS outage is never NotFound or Internal.
func TestControllerErrorMapping(t *testing.T) {
	tests := []struct {
		name    string
		fault   func(e *ctrlEnv) (cleanup func())
		timeout time.Duration
		code    codes.Code
		parts   []string
	}{
		{"dropped connection", func(e *ctrlEnv) func() {
			e.sim.DropConnection("/disk add", sim.DropBeforeRun)
			return nil
		}, 0, codes.Unavailable, []string{"cannot reach the RDS at 127.0.0.1:", "check that the RDS is up"}},
		{"hang past the deadline", func(e *ctrlEnv) func() {
			return e.sim.Hang("/disk add").Release
		}, 300 * time.Millisecond, codes.DeadlineExceeded, []string{"did not answer in time"}},
		{"disk full", func(e *ctrlEnv) func() {
			e.sim.SetDiskFull(true)
			return nil
		}, 0, codes.ResourceExhausted, []string{`pool "storage-pool" has 1 TiB free (1099511627776 bytes)`, "needs 1 GiB"}},
		{"disk full, error on stderr with exit 1", func(e *ctrlEnv) func() {
			e.sim.SetDiskFull(true)
			e.sim.SetErrorOutput(sim.Stderr, 1)
			return nil
		}, 0, codes.ResourceExhausted, []string{"1 TiB free"}},
		{"RDS down", func(e *ctrlEnv) func() {
			if err := e.sim.Close(); err != nil {
				t.Fatal(err)
			}
			return nil
		}, 0, codes.Unavailable, []string{"cannot reach the RDS"}},
		{"pool not mounted", nil, 0, codes.Internal, []string{"not on a mounted disk"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newCtrlEnv(t, withConfig(func(c *Config) { c.RDSAllowedPaths = []string{"/no-pool/volumes"} }))
			req := createReq("pvc-fault", 1<<30)
			if tc.fault != nil {
				if cleanup := tc.fault(e); cleanup != nil {
					defer cleanup()
				}
			} else {
				req.Parameters = map[string]string{"volumePath": "/no-pool/volumes"}
			}
			ctx := testCtx(t)
			if tc.timeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tc.timeout)
				defer cancel()
			}
			_, err := e.c.CreateVolume(ctx, req)
			wantCode(t, err, tc.code, tc.parts...)
		})
	}
}

// With the RDS unreachable, every RPC that needs it answers Unavailable, never NotFound
// (which would tell the CO a volume is gone) nor OK for a delete that did nothing.
func TestControllerUnavailableEverywhere(t *testing.T) {
	e := newCtrlEnv(t)
	vol := e.mustCreate(createReq("pvc-down", 1<<30))
	if err := e.sim.Close(); err != nil {
		t.Fatal(err)
	}
	calls := map[string]func(context.Context) error{
		"DeleteVolume": func(ctx context.Context) error {
			_, err := e.c.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: vol.VolumeId})
			return err
		},
		"ControllerPublishVolume": func(ctx context.Context) error {
			_, err := e.c.ControllerPublishVolume(ctx, &csi.ControllerPublishVolumeRequest{VolumeId: vol.VolumeId, NodeId: "n1", VolumeCapability: rwo})
			return err
		},
		"ControllerExpandVolume": func(ctx context.Context) error {
			_, err := e.c.ControllerExpandVolume(ctx, &csi.ControllerExpandVolumeRequest{VolumeId: vol.VolumeId, CapacityRange: &csi.CapacityRange{RequiredBytes: 2 << 30}})
			return err
		},
		"ValidateVolumeCapabilities": func(ctx context.Context) error {
			_, err := e.c.ValidateVolumeCapabilities(ctx, &csi.ValidateVolumeCapabilitiesRequest{VolumeId: vol.VolumeId, VolumeCapabilities: []*csi.VolumeCapability{rwo}})
			return err
		},
		"ControllerGetVolume": func(ctx context.Context) error {
			_, err := e.c.ControllerGetVolume(ctx, &csi.ControllerGetVolumeRequest{VolumeId: vol.VolumeId})
			return err
		},
		"ControllerGetVolumeHealth": func(ctx context.Context) error {
			_, err := e.c.ControllerGetVolumeHealth(ctx, &csi.ControllerGetVolumeHealthRequest{VolumeId: vol.VolumeId})
			return err
		},
		"ListVolumes": func(ctx context.Context) error {
			_, err := e.c.ListVolumes(ctx, &csi.ListVolumesRequest{})
			return err
		},
		"GetCapacity": func(ctx context.Context) error {
			_, err := e.c.GetCapacity(ctx, &csi.GetCapacityRequest{})
			return err
		},
	}
	for name, call := range calls {
		t.Run(name, func(t *testing.T) {
			wantCode(t, call(testCtx(t)), codes.Unavailable, "cannot reach the RDS")
		})
	}
}

// A create cut off after the RDS made the disk is retried into the same volume: no
// duplicate disk, no second file, no leak.
func TestControllerInterruptedCreate(t *testing.T) {
	tests := []struct {
		name  string
		fault func(e *ctrlEnv) (ctx context.Context, release func())
		code  codes.Code
	}{
		{"connection dropped after /disk add ran", func(e *ctrlEnv) (context.Context, func()) {
			e.sim.DropConnection("/disk add", sim.DropAfterRun)
			return context.Background(), nil
		}, codes.Unavailable},
		{"deadline while reading the disk back", func(e *ctrlEnv) (context.Context, func()) {
			h := e.sim.Hang(`/disk print detail where slot="pvc-cut"`)
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			return ctx, func() { cancel(); h.Release() }
		}, codes.DeadlineExceeded},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newCtrlEnv(t)
			ctx, release := tc.fault(e)
			_, err := e.c.CreateVolume(ctx, createReq("pvc-cut", 3<<29))
			wantCode(t, err, tc.code)
			if release != nil {
				release()
			}
			if d := e.disk("pvc-cut"); d == nil {
				t.Fatal("the fault fired before the disk was made: the test proves nothing")
			}
			vol := e.mustCreate(createReq("pvc-cut", 3<<29))
			if vol.VolumeId != "pvc-cut" || vol.CapacityBytes != 1610612736 {
				t.Errorf("retry returned %v", vol)
			}
			if files := e.volumeFiles(); !slices.Equal(files, []string{"pvc-cut.img"}) {
				t.Errorf("files after the retry: %v, want exactly pvc-cut.img", files)
			}
			adds := 0
			for _, c := range e.sim.Commands() {
				if strings.HasPrefix(c, "/disk add") {
					adds++
				}
			}
			if adds != 2 { // the interrupted one and the retry's, which found the slot taken
				t.Errorf("%d /disk add commands, want 2", adds)
			}
		})
	}
}

// A delete cut off after the disk was removed but before its file was is completed by the
// retry, which finds the file by name and removes exactly it.
func TestControllerDeleteCompletesInterruptedDelete(t *testing.T) {
	e := newCtrlEnv(t, withConfig(func(c *Config) { c.RDSAllowedPaths = []string{"/storage-pool/fast"} }))
	req := createReq("pvc-half", 1<<30)
	req.Parameters = map[string]string{"volumePath": "/storage-pool/fast/db"}
	vol := e.mustCreate(req)
	other := e.mustCreate(createReq("pvc-other", 1<<30))
	file := e.sim.HostPath("/storage-pool/fast/db/pvc-half.img")

	e.sim.DropConnection("/file print", sim.DropBeforeRun) // RemoveFile lists the directory first
	_, err := e.c.DeleteVolume(testCtx(t), &csi.DeleteVolumeRequest{VolumeId: vol.VolumeId})
	wantCode(t, err, codes.Unavailable)
	if e.disk(vol.VolumeId) != nil || !fileExists(t, file) {
		t.Fatal("the fault did not leave the disk removed and the file in place: the test proves nothing")
	}
	if _, err := e.c.DeleteVolume(testCtx(t), &csi.DeleteVolumeRequest{VolumeId: vol.VolumeId}); err != nil {
		t.Fatalf("retried delete: %v", err)
	}
	if fileExists(t, file) {
		t.Error("the retry left the file")
	}
	if e.disk(other.VolumeId) == nil || !fileExists(t, e.sim.HostPath(testVolumePath+"/pvc-other.img")) {
		t.Error("another volume was touched")
	}
	removes := 0
	for _, c := range e.sim.Commands() {
		if strings.HasPrefix(c, "/file remove") {
			removes++
			if !strings.Contains(c, `"storage-pool/fast/db/pvc-half.img"`) {
				t.Errorf("removed something else: %s", c)
			}
		}
	}
	if removes != 1 {
		t.Errorf("%d /file remove commands, want 1", removes)
	}
}

// A leftover file that another disk uses is never removed.
func TestControllerDeleteKeepsFileInUse(t *testing.T) {
	e := newCtrlEnv(t)
	if _, err := e.sim.Exec(context.Background(), `/disk add type=file file-path="`+testVolumePath+`/pvc-shared.img" file-size=1G slot="hand-made" nvme-tcp-export=yes`); err != nil {
		t.Fatal(err)
	}
	_, err := e.c.DeleteVolume(testCtx(t), &csi.DeleteVolumeRequest{VolumeId: "pvc-shared"})
	wantCode(t, err, codes.FailedPrecondition, `used by disk "hand-made"`)
	if !fileExists(t, e.sim.HostPath(testVolumePath+"/pvc-shared.img")) {
		t.Error("a file in use was removed")
	}
}

// A second call on a volume while one is in flight is Aborted at once, and a stuck call
// on one volume does not block another.
func TestControllerConcurrentCallsAborted(t *testing.T) {
	e := newCtrlEnv(t)
	hold := e.sim.Hang(`slot="pvc-busy"`)
	var wg sync.WaitGroup
	wg.Go(func() {
		_, err := e.c.CreateVolume(testCtx(t), createReq("pvc-busy", 1<<30))
		if err != nil {
			t.Errorf("held create: %v", err)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := hold.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	_, err := e.c.CreateVolume(testCtx(t), createReq("pvc-busy", 1<<30))
	wantCode(t, err, codes.Aborted, "pvc-busy", "already in progress")
	_, err = e.c.DeleteVolume(testCtx(t), &csi.DeleteVolumeRequest{VolumeId: "pvc-busy"})
	wantCode(t, err, codes.Aborted)
	e.mustCreate(createReq("pvc-free", 1<<30))
	hold.Release()
	wg.Wait()
}

// Every answer from the RDS counts as contact for Probe; a transport failure does not.
func TestControllerRDSContactMakesReady(t *testing.T) {
	e := newCtrlEnv(t)
	if e.c.ready() {
		t.Fatal("ready before any contact")
	}
	_, err := e.c.client.GetDisk(testCtx(t), "pvc-none")
	if !errors.Is(err, routeros.ErrNotFound) || !e.c.ready() {
		t.Fatalf("after a not-found answer: err %v, ready %v; want ready", err, e.c.ready())
	}
}

// --rds-command-timeout bounds each RouterOS operation of an RPC whose own deadline is
// later; a copy command, which may run for hours, is bounded by the copy tracker instead.
func TestControllerRDSCommandTimeout(t *testing.T) {
	const bound = 300 * time.Millisecond
	e := newCtrlEnv(t, withConfig(func(c *Config) { c.RDSCommandTimeout = bound }))
	hold := e.sim.Hang("/disk add")
	start := time.Now()
	_, err := e.c.CreateVolume(testCtx(t), createReq("pvc-slow", 1<<30))
	wantCode(t, err, codes.DeadlineExceeded, "did not answer in time", "--rds-command-timeout")
	if el := time.Since(start); el > 5*time.Second {
		t.Errorf("CreateVolume on a hung RDS answered after %v, want about %v", el, bound)
	}
	hold.Release()

	src := e.mustCreate(createReq("pvc-src", 16<<20))
	e.c.copies.waitMax = 0
	copyHold := e.sim.Hang("/file copy")
	if _, err := e.c.CreateSnapshot(testCtx(t), snapReq("snapshot-slow", src.VolumeId)); err != nil {
		t.Fatal(err)
	}
	if err := copyHold.Wait(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * bound)
	copyHold.Release()
	e.mustSnapshot("snapshot-slow", src.VolumeId)
	if n := countPrefix(e.sim.Commands(), "/file copy"); n != 1 {
		t.Errorf("%d copy commands, want 1: the copy outlasting --rds-command-timeout must not be cut", n)
	}
}

func countPrefix(lines []string, prefix string) int {
	n := 0
	for _, l := range lines {
		if strings.HasPrefix(l, prefix) {
			n++
		}
	}
	return n
}

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
