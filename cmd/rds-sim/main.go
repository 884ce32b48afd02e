// Command rds-sim runs the RouterOS simulator on its own: an SSH server that answers like a
// MikroTik ROSE Data Server, over sparse files in a directory, for trying the driver by hand
// or from a test harness.
//
//	rds-sim --listen 127.0.0.1:2222 --dir DIR --host-key FILE --authorized-keys FILE \
//	    [--nvmet] [--version 7.21] [--pool NAME=SIZE]... [--width N] [--latency D] [--copy-duration D]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"srvlab.io/rds-csi/routeros/sim"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(2)
		}
		fmt.Fprintln(os.Stderr, "rds-sim:", err)
		os.Exit(1)
	}
}

// poolFlags collects repeated --pool NAME=SIZE.
type poolFlags []sim.Pool

func (p *poolFlags) String() string {
	var parts []string
	for _, x := range *p {
		parts = append(parts, fmt.Sprintf("%s=%d", x.Name, x.Size))
	}
	return strings.Join(parts, ",")
}

func (p *poolFlags) Set(v string) error {
	name, size, ok := strings.Cut(v, "=")
	if !ok || name == "" {
		return fmt.Errorf("want NAME=SIZE (e.g. storage-pool=1T), got %q", v)
	}
	n, err := sim.ParseSize(size)
	if err != nil {
		return fmt.Errorf("pool %s: size %q: want bytes or K/M/G/T units (e.g. 1T)", name, size)
	}
	*p = append(*p, sim.Pool{Name: name, Size: n})
	return nil
}

// defaultVolumePath is where the driver puts volumes unless a StorageClass says otherwise.
const defaultVolumePath = "storage-pool/metal-csi"

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("rds-sim", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		opts       sim.Options
		pools      poolFlags
		listen     = fs.String("listen", "127.0.0.1:2222", "address to serve SSH on")
		hostKey    = fs.String("host-key", "", "SSH host key file (an ed25519 key is generated if missing)")
		authorized = fs.String("authorized-keys", "", "authorized_keys file of the clients allowed in")
		verbose    = fs.Bool("verbose", false, "log connections and every command")
	)
	fs.StringVar(&opts.Dir, "dir", "", "directory holding the pools' files (created if missing)")
	fs.BoolVar(&opts.NVMet, "nvmet", false, "also export disks through the kernel NVMe target (root, configfs with nvmet loaded)")
	fs.StringVar(&opts.Version, "version", sim.DefaultVersion, "RouterOS version to report (before 7.21 there is no nvme-tcp-server-nqn)")
	fs.Var(&pools, "pool", "a RAID pool as NAME=SIZE, repeatable (default storage-pool=1T)")
	fs.IntVar(&opts.Width, "width", sim.DefaultWidth, "console width print detail wraps at (negative: never)")
	fs.DurationVar(&opts.Latency, "latency", 0, "delay before every command")
	fs.DurationVar(&opts.CopyDuration, "copy-duration", 0, "make /file copy run in the background for this long")
	fs.IntVar(&opts.MaxSessions, "max-sessions", 0, "concurrent exec channels allowed per connection (0: no limit)")
	fs.BoolVar(&opts.CRLF, "crlf", false, "end output lines with CR LF")
	fs.StringVar(&opts.NVMeAddress, "nvme-address", "127.0.0.1", "IPv4 address nvmet ports listen on, or several, comma separated (every disk is exported on each: multipath)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	switch {
	case fs.NArg() > 0:
		return fmt.Errorf("unexpected argument %q (all settings are --flags)", fs.Arg(0))
	case opts.Dir == "":
		return errors.New("--dir is required: the directory that holds the pools' files")
	case *hostKey == "":
		return errors.New("--host-key is required: a key file (generated if it does not exist)")
	case *authorized == "":
		return errors.New("--authorized-keys is required: an authorized_keys file with the client's public key")
	}
	opts.Pools = pools
	if len(pools) == 0 {
		opts.Pools = []sim.Pool{{Name: "storage-pool", Size: 1 << 40}}
		if err := os.MkdirAll(filepath.Join(opts.Dir, defaultVolumePath), 0o755); err != nil {
			return fmt.Errorf("create the default volume path: %w", err)
		}
	}
	if *verbose {
		logger := log.New(stderr, "", log.LstdFlags)
		opts.Logf = logger.Printf
	}
	signer, err := sim.LoadOrCreateHostKey(*hostKey)
	if err != nil {
		return err
	}
	keys, err := sim.LoadAuthorizedKeys(*authorized)
	if err != nil {
		return err
	}
	s, err := sim.New(opts)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		s.Close()
		return fmt.Errorf("listen on %s: %w", *listen, err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(ln, sim.ServerConfig{HostKey: signer, AuthorizedKeys: keys}) }()
	fmt.Fprintf(stdout, "rds-sim: listening on %s (version %s, dir %s)\n", ln.Addr(), opts.Version, s.Dir())
	select {
	case <-ctx.Done():
	case err := <-served:
		s.Close()
		return err
	}
	closeErr := s.Close()
	if err := <-served; err != nil {
		return err
	}
	return closeErr
}
