package sim

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// DefaultVersion is the RouterOS version the simulator reports unless told otherwise: the
// one the reference samples were captured on.
const DefaultVersion = "7.24.4"

// DefaultWidth is the console width the simulator wraps `print detail` at unless told
// otherwise. Over SSH exec the hardware wrapped a pvc file-path inside its value, which an
// 80-column console does and a wide one would not.
const DefaultWidth = 80

// DefaultConfigfsRoot is where the kernel NVMe target's configfs lives.
const DefaultConfigfsRoot = "/sys/kernel/config/nvmet"

// ExportsDirName is the directory under Options.Dir holding one symlink per exported disk,
// named by its NQN and pointing at the absolute backing file.
const ExportsDirName = ".nvme-exports"

// Options configures a simulator.
type Options struct {
	// Dir holds the pools' files: RouterOS path /pool/dir/x.img is Dir/pool/dir/x.img.
	Dir string
	// Version is what `/system resource get version` reports; before 7.21,
	// nvme-tcp-server-nqn is rejected and the NQN is the slot. Default DefaultVersion.
	Version string
	// Pools are the mounted RAID pools; default one "storage-pool" of 1 TiB.
	Pools []Pool
	// Width is the console width `print detail` wraps at: 0 means DefaultWidth, negative
	// never wraps. An SSH user name suffix like `admin+c512w` sets it per connection.
	Width int
	// CRLF ends output lines with \r\n, as RouterOS may.
	CRLF bool
	// Latency delays every command (see also SetLatency).
	Latency time.Duration
	// CopyDuration makes /file copy return at once and the destination grow to its full
	// size over this long, so "copy still running" is observable through /file print.
	CopyDuration time.Duration
	// CopyPreallocate, with CopyDuration, gives a copy's destination its full size at once
	// and fills it over CopyDuration, as a copy that preallocates would: its size then says
	// nothing about progress, only its last-modified advancing does. Whether RouterOS
	// copies like this is unverified; drivers must not take the size alone as completion.
	CopyPreallocate bool
	// MaxSessions limits concurrent exec channels per SSH connection; 0 means no limit.
	MaxSessions int
	// NVMet exports every exported disk through the kernel NVMe target (configfs); New
	// fails when it is unavailable.
	NVMet bool
	// ConfigfsRoot is nvmet's configfs directory; default DefaultConfigfsRoot. Tests point
	// it at a temporary directory.
	ConfigfsRoot string
	// NVMeAddress is the IPv4 address nvmet ports listen on, or several, comma separated
	// (an RDS with a storage port on each network: every disk is exported on each);
	// default 127.0.0.1.
	NVMeAddress string
	// Location is the time zone of /file last-modified; default time.Local.
	Location *time.Location
	// Logf, if set, receives one line per connection event and command.
	Logf func(format string, args ...any)
}

// Pool is one mounted RAID pool, printed as a `type=raid` /disk item. Only Name and Size
// are required; the rest default to the values of the reference sample.
type Pool struct {
	Name        string
	Size        int64
	FSLabel     string // default Name
	FSUUID      string // default derived from Name
	FS          string // default "xfs"
	Model       string // default "RAID0 striped"
	RAIDUUID    string // default derived from Name
	RAIDType    int    // default 0
	RAIDDevices int    // default 4
	TotalInodes int64  // default Size/10240
}

// Sim is a simulated RDS. All methods are safe for concurrent use.
type Sim struct {
	opts      Options
	version   version
	exporters []exporter

	mu     sync.Mutex // guards the state below; never held while sleeping or copying data
	pools  []*Pool
	disks  []*disk // in creation order: the order RouterOS prints them
	nextID int
	copies map[string]*copyJob // by host path of the destination

	faults faults
	srv    servers
}

type disk struct {
	id      int
	slot    string
	path    string // RouterOS path: /pool/dir/x.img
	size    int64
	export  bool
	port    int
	nqn     string // as set; "" means the slot is the NQN
	allow   string // nvme-tcp-server-allow-host-name, comma separated
	comment string
}

// New creates a simulator over opts.Dir (created if missing) with its pool directories.
func New(opts Options) (*Sim, error) {
	if opts.Dir == "" {
		return nil, errors.New("sim: Options.Dir is empty: give the directory that holds the pools' files")
	}
	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return nil, fmt.Errorf("sim: resolve Options.Dir: %w", err)
	}
	opts.Dir = dir
	if opts.Version == "" {
		opts.Version = DefaultVersion
	}
	v, err := parseVersion(opts.Version)
	if err != nil {
		return nil, err
	}
	if opts.Width == 0 {
		opts.Width = DefaultWidth
	}
	if opts.ConfigfsRoot == "" {
		opts.ConfigfsRoot = DefaultConfigfsRoot
	}
	if opts.NVMeAddress == "" {
		opts.NVMeAddress = "127.0.0.1"
	}
	for _, a := range strings.Split(opts.NVMeAddress, ",") {
		if ip := net.ParseIP(a); ip == nil || ip.To4() == nil {
			return nil, fmt.Errorf("sim: NVMe address %q is not an IPv4 address (give one, or several comma separated, like 127.0.0.1,127.0.0.2)", a)
		}
	}
	if opts.Location == nil {
		opts.Location = time.Local
	}
	if len(opts.Pools) == 0 {
		opts.Pools = []Pool{{Name: "storage-pool", Size: 1 << 40}}
	}
	s := &Sim{opts: opts, version: v, copies: map[string]*copyJob{}}
	s.faults.latency = opts.Latency
	s.faults.maxSessions = opts.MaxSessions
	for i := range opts.Pools {
		p := opts.Pools[i]
		if err := validPoolName(p.Name); err != nil {
			return nil, err
		}
		if p.Size <= 0 {
			return nil, fmt.Errorf("sim: pool %q has size %d: give a positive size", p.Name, p.Size)
		}
		p.setDefaults()
		if err := os.MkdirAll(filepath.Join(dir, p.Name), 0o755); err != nil {
			return nil, fmt.Errorf("sim: create pool directory: %w", err)
		}
		s.pools = append(s.pools, &p)
	}
	links, err := newLinkExporter(filepath.Join(dir, ExportsDirName))
	if err != nil {
		return nil, err
	}
	s.exporters = append(s.exporters, links)
	if opts.NVMet {
		nv, err := newNVMetExporter(opts.ConfigfsRoot)
		if err != nil {
			return nil, err
		}
		s.exporters = append(s.exporters, nv)
	}
	if err := s.load(); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

func validPoolName(name string) error {
	if name == "" || strings.ContainsAny(name, "/\\ \"") || name == "." || name == ".." || strings.HasPrefix(name, ".") {
		return fmt.Errorf("sim: pool name %q is not a plain directory name", name)
	}
	return nil
}

func (p *Pool) setDefaults() {
	if p.FSLabel == "" {
		p.FSLabel = p.Name
	}
	if p.FSUUID == "" {
		h := nameHash(p.Name)
		p.FSUUID = fmt.Sprintf("%08x-%04x-%04x-%04x-%012x", h[0], h[1]&0xffff, h[2]&0xffff, h[3]&0xffff, uint64(h[4])<<16|uint64(h[5]&0xffff))
	}
	if p.FS == "" {
		p.FS = "xfs"
	}
	if p.Model == "" {
		p.Model = "RAID0 striped"
	}
	if p.RAIDUUID == "" {
		h := nameHash("raid:" + p.Name)
		p.RAIDUUID = fmt.Sprintf("%08x-%08x-%08x-%08x", h[0], h[1], h[2], h[3])
	}
	if p.RAIDDevices == 0 {
		p.RAIDDevices = 4
	}
	if p.TotalInodes == 0 {
		p.TotalInodes = p.Size / 10240
	}
}

// nameHash gives stable pseudo-random words for default UUIDs (FNV-1a, re-seeded per word).
func nameHash(s string) [6]uint32 {
	var out [6]uint32
	h := uint32(2166136261)
	for i := range out {
		for j := 0; j < len(s); j++ {
			h ^= uint32(s[j])
			h *= 16777619
		}
		h ^= uint32(i + 1)
		h *= 16777619
		out[i] = h
	}
	return out
}

// Dir returns the absolute directory that holds the pools' files.
func (s *Sim) Dir() string { return s.opts.Dir }

// HostPath maps a RouterOS file path (with or without the leading slash) to the backing
// file on this machine.
func (s *Sim) HostPath(rosPath string) string {
	return filepath.Join(s.opts.Dir, filepath.FromSlash(strings.TrimPrefix(rosPath, "/")))
}

// Exec runs one command line as the RDS would on an exec channel, with the console width
// of the options, and returns what it prints. A RouterOS error is returned as an error whose
// text is the printed line. Faults do not apply: they belong to the SSH transport.
func (s *Sim) Exec(ctx context.Context, line string) (string, error) {
	out, err := s.execLine(ctx, line, s.opts.Width)
	return s.lineEndings(out), err
}

func (s *Sim) lineEndings(out string) string {
	if s.opts.CRLF {
		return strings.ReplaceAll(out, "\n", "\r\n")
	}
	return out
}

// Close stops the SSH servers, cancels running copies and removes the exports this
// simulator made (an RDS that is off exports nothing). Backing files and the disk table
// stay: New on the same directory brings the disks back. Closing twice does nothing.
func (s *Sim) Close() error {
	if !s.srv.closeAll() {
		return nil
	}
	s.mu.Lock()
	jobs := make([]*copyJob, 0, len(s.copies))
	for _, j := range s.copies {
		jobs = append(jobs, j)
	}
	s.mu.Unlock()
	for _, j := range jobs {
		j.cancel()
		<-j.done
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	for _, d := range s.disks {
		if d.export {
			errs = append(errs, s.unexport(d))
		}
	}
	return errors.Join(errs...)
}

func (s *Sim) logf(format string, args ...any) {
	if s.opts.Logf != nil {
		s.opts.Logf(format, args...)
	}
}
