package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"srvlab.io/rds-csi/routeros"
	"srvlab.io/rds-csi/routeros/sim"
)

// volumePath is the RouterOS directory volumes go to: the driver's default
// --rds-volume-path, created in the simulator as cmd/rds-sim does.
const volumePath = "/storage-pool/metal-csi"

// rds is the RouterOS simulator, run inside the harness and served over SSH on a random
// loopback port, with the key files a driver process needs to reach it.
type rds struct {
	*sim.Sim
	dir            string
	host           string
	port           int
	keyFile        string
	knownHostsFile string
	signer         ssh.Signer
	served         chan error
}

// startRDS starts a simulator over dir with the given per-command latency.
func startRDS(dir string, latency time.Duration) (*rds, error) {
	if err := os.MkdirAll(filepath.Join(dir, "sim", filepath.FromSlash(volumePath)), 0o755); err != nil {
		return nil, err
	}
	// A pool far larger than the runs need (the files are sparse): capacity is not what
	// is measured.
	s, err := sim.New(sim.Options{Dir: filepath.Join(dir, "sim"), Latency: latency, Pools: []sim.Pool{{Name: "storage-pool", Size: 64 << 40}}})
	if err != nil {
		return nil, err
	}
	hostKey, _, err := sim.NewKey()
	if err != nil {
		s.Close()
		return nil, err
	}
	clientKey, clientPEM, err := sim.NewKey()
	if err != nil {
		s.Close()
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		s.Close()
		return nil, err
	}
	addr := ln.Addr().(*net.TCPAddr)
	r := &rds{Sim: s, dir: dir, host: addr.IP.String(), port: addr.Port, signer: clientKey,
		keyFile: filepath.Join(dir, "id_ed25519"), knownHostsFile: filepath.Join(dir, "known_hosts"), served: make(chan error, 1)}
	line := knownhosts.Line([]string{knownhosts.Normalize(ln.Addr().String())}, hostKey.PublicKey()) + "\n"
	if err := errors.Join(os.WriteFile(r.keyFile, clientPEM, 0o600), os.WriteFile(r.knownHostsFile, []byte(line), 0o644)); err != nil {
		ln.Close()
		s.Close()
		return nil, err
	}
	go func() {
		r.served <- s.Serve(ln, sim.ServerConfig{HostKey: hostKey, AuthorizedKeys: []ssh.PublicKey{clientKey.PublicKey()}})
	}()
	return r, nil
}

// exportsDir is where the simulator links every exported disk by NQN: what the loop
// stand-in for NVMe/TCP attaches.
func (r *rds) exportsDir() string { return filepath.Join(r.Sim.Dir(), sim.ExportsDirName) }

// driverArgs are the controller flags that reach this simulator.
func (r *rds) driverArgs() []string {
	return []string{
		"--rds-address=" + r.host,
		"--rds-ssh-port=" + strconv.Itoa(r.port),
		"--rds-user=admin",
		"--rds-key-file=" + r.keyFile,
		"--rds-known-hosts=" + r.knownHostsFile,
	}
}

// client is a RouterOS client of the harness's own, for setting up volumes.
func (r *rds) client() (*routeros.Client, error) {
	return routeros.New(routeros.Config{
		Address: r.host, Port: r.port, User: "admin", Signer: r.signer, KnownHostsFile: r.knownHostsFile,
		Logger: slog.New(slog.DiscardHandler),
	})
}

func (r *rds) close() error {
	err := r.Sim.Close()
	if serr := <-r.served; serr != nil && !errors.Is(serr, net.ErrClosed) {
		err = errors.Join(err, fmt.Errorf("sim: serve: %w", serr))
	}
	return err
}
