package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"srvlab.io/rds-csi/mount"
	"srvlab.io/rds-csi/nvme"
)

// Modes the binary runs in. "all" serves controller and node on one socket (tests, demo).
const (
	modeController = "controller"
	modeNode       = "node"
	modeAll        = "all"
)

const defaultDriverName = "rds.csi.srvlab.io"

// Config is everything the binary is told at start. Field names follow the flags.
type Config struct {
	Endpoint       string
	Mode           string
	NodeID         string
	DriverName     string
	MetricsAddress string
	LogFormat      string
	LogLevel       string

	RDSAddress             string
	RDSSSHPort             int
	RDSUser                string
	RDSKeyFile             string
	RDSKnownHosts          string
	RDSInsecureSkipHostKey bool
	RDSVolumePath          string
	RDSAllowedPaths        []string
	RDSMaxSessions         int
	RDSCommandTimeout      time.Duration
	CapacityReserve        int64
	Kubeconfig             string
	ManagedNQNPrefix       string
	NVMeHostDir            string
	SysfsRoot              string
	DevRoot                string
	ProcRoot               string
	KubeletDir             string
	StateDir               string
	ShutdownTimeout        time.Duration
	HealInterval           time.Duration
	MountStormLimit        int
	ShowVersion            bool
}

func (c *Config) runsController() bool { return c.Mode == modeController || c.Mode == modeAll }
func (c *Config) runsNode() bool       { return c.Mode == modeNode || c.Mode == modeAll }

// errHelp is returned when --help was asked for; the usage has been printed.
var errHelp = flag.ErrHelp

// configFlag describes one flag: its name, its environment fallback and its help text.
type configFlag struct {
	name, env, usage string
}

// parseConfig reads flags, falling back to the environment for flags that have an env name
// and were not given on the command line. Precedence: flag > environment > default.
func parseConfig(args []string, getenv func(string) string, out io.Writer) (*Config, error) {
	c := &Config{}
	fs := flag.NewFlagSet("rds-csi", flag.ContinueOnError)
	fs.SetOutput(out)
	hostname, _ := os.Hostname()

	var allowedPaths, capacityReserve string
	var flags []configFlag
	str := func(p *string, name, env, def, usage string) {
		fs.StringVar(p, name, def, usage)
		flags = append(flags, configFlag{name, env, usage})
	}
	integer := func(p *int, name, env string, def int, usage string) {
		fs.IntVar(p, name, def, usage)
		flags = append(flags, configFlag{name, env, usage})
	}
	duration := func(p *time.Duration, name, env string, def time.Duration, usage string) {
		fs.DurationVar(p, name, def, usage)
		flags = append(flags, configFlag{name, env, usage})
	}
	boolean := func(p *bool, name, env string, usage string) {
		fs.BoolVar(p, name, false, usage)
		flags = append(flags, configFlag{name, env, usage})
	}

	str(&c.Endpoint, "endpoint", "CSI_ENDPOINT", "unix:///csi/csi.sock", "gRPC listen address (unix:// URL or a plain socket path)")
	str(&c.Mode, "mode", "RDS_CSI_MODE", modeAll, "which services to run: controller, node or all")
	str(&c.NodeID, "node-id", "NODE_ID", hostname, "this node's ID (the Kubernetes node name)")
	str(&c.DriverName, "driver-name", "", defaultDriverName, "CSI driver name")
	str(&c.MetricsAddress, "metrics-address", "", ":9809", "listen address for Prometheus /metrics and /healthz; empty disables")
	str(&c.LogFormat, "log-format", "", "text", "log format: text or json")
	str(&c.LogLevel, "log-level", "", "info", "log level: debug, info, warn or error")
	str(&c.RDSAddress, "rds-address", "RDS_ADDRESS", "", "RDS management address (SSH)")
	integer(&c.RDSSSHPort, "rds-ssh-port", "RDS_SSH_PORT", 22, "RDS SSH port")
	str(&c.RDSUser, "rds-user", "RDS_USER", "", "RouterOS user for SSH")
	str(&c.RDSKeyFile, "rds-key-file", "RDS_KEY_FILE", "", "SSH private key file for the RouterOS user")
	str(&c.RDSKnownHosts, "rds-known-hosts", "RDS_KNOWN_HOSTS", "", "known_hosts file pinning the RDS host key")
	boolean(&c.RDSInsecureSkipHostKey, "rds-insecure-skip-host-key", "", "do not verify the RDS host key (explicit opt-out, logged as a warning)")
	str(&c.RDSVolumePath, "rds-volume-path", "RDS_VOLUME_PATH", "/storage-pool/metal-csi", "default pool directory for volume files; StorageClass volumePath must lie under it or under --rds-allowed-paths")
	str(&allowedPaths, "rds-allowed-paths", "RDS_ALLOWED_PATHS", "", "comma-separated further directories a StorageClass volumePath may lie under")
	integer(&c.RDSMaxSessions, "rds-max-sessions", "RDS_MAX_SESSIONS", 4, "concurrent SSH sessions to the RDS (more commands queue)")
	duration(&c.RDSCommandTimeout, "rds-command-timeout", "", 60*time.Second, "upper bound for one RouterOS command when the caller has no earlier deadline")
	str(&capacityReserve, "capacity-reserve", "RDS_CAPACITY_RESERVE", "0", "pool space GetCapacity keeps back, in bytes or with a binary suffix (e.g. 50Gi)")
	str(&c.Kubeconfig, "kubeconfig", "KUBECONFIG", "", "JSON kubeconfig for reading VolumeAttachments outside a cluster, as 'kubectl config view --raw --minify --flatten -o json' writes it (in a pod the service account is used)")
	str(&c.ManagedNQNPrefix, "managed-nqn-prefix", "CSI_MANAGED_NQN_PREFIX", "", "only NVMe subsystems whose NQN starts with this are ever touched (required for node and all)")
	str(&c.NVMeHostDir, "nvme-host-dir", "", "/etc/nvme", "directory holding hostnqn and hostid")
	str(&c.SysfsRoot, "sysfs-root", "", "/sys", "sysfs mount point")
	str(&c.DevRoot, "dev-root", "", "/dev", "device directory")
	str(&c.ProcRoot, "proc-root", "", "/proc", "proc mount point (every process's open files are visible only with the host's PID namespace)")
	str(&c.KubeletDir, "kubelet-dir", "KUBELET_DIR", "/var/lib/kubelet", "kubelet's root directory, where pods' block device nodes live")
	str(&c.StateDir, "state-dir", "", "/var/lib/rds-csi", "node-local state directory")
	duration(&c.ShutdownTimeout, "shutdown-timeout", "", 30*time.Second, "how long in-flight RPCs may finish after SIGTERM before the server stops hard")
	duration(&c.HealInterval, "heal-interval", "", 5*time.Second, "how often the node checks staged volumes for stale NVMe devices")
	integer(&c.MountStormLimit, "mount-storm-limit", "", mount.DefaultStormLimit, "refuse a mount whose source already has this many mount entries")
	boolean(&c.ShowVersion, "version", "", "print the version and exit")

	fs.Usage = func() { printUsage(out, fs, flags) }
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q: every setting is a --flag (see --help)", fs.Arg(0))
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	for _, f := range flags {
		if f.env == "" || set[f.name] {
			continue
		}
		if v := getenv(f.env); v != "" {
			if err := fs.Set(f.name, v); err != nil {
				return nil, fmt.Errorf("environment %s=%q for --%s: %v", f.env, v, f.name, err)
			}
		}
	}
	c.RDSAllowedPaths = splitList(allowedPaths)
	reserve, err := parseBytes(capacityReserve)
	if err != nil {
		return nil, fmt.Errorf("--capacity-reserve %q: %v (use bytes or a binary suffix such as 50Gi)", capacityReserve, err)
	}
	c.CapacityReserve = reserve
	return c, nil
}

func printUsage(out io.Writer, fs *flag.FlagSet, flags []configFlag) {
	fmt.Fprintf(out, "Usage: rds-csi [flags]\n       rds-csi doctor [flags]\n\nCSI driver for MikroTik ROSE Data Server storage over NVMe/TCP.\n\nFlags (environment fallback in brackets):\n")
	for _, f := range flags {
		fl := fs.Lookup(f.name)
		env := ""
		if f.env != "" {
			env = " [" + f.env + "]"
		}
		def := ""
		if fl.DefValue != "" && fl.DefValue != "false" && fl.DefValue != "0" {
			def = fmt.Sprintf(" (default %q)", fl.DefValue)
		}
		fmt.Fprintf(out, "  --%s%s\n        %s%s\n", f.name, env, f.usage, def)
	}
}

// validate checks the combination of settings; each error is one line saying what is wrong
// and how to fix it. The doctor runs the same parts: validateCommon and validateNode as
// usage checks, validateController as its "rds settings" check.
func (c *Config) validate() error {
	if err := c.validateCommon(); err != nil {
		return err
	}
	if c.runsNode() {
		if err := c.validateNode(); err != nil {
			return err
		}
	}
	if c.runsController() {
		return c.validateController()
	}
	return nil
}

// validateCommon checks the settings of every mode.
func (c *Config) validateCommon() error {
	switch c.Mode {
	case modeController, modeNode, modeAll:
	default:
		return fmt.Errorf("--mode %q is not valid: use controller, node or all", c.Mode)
	}
	if c.DriverName == "" {
		return errors.New("--driver-name is empty: leave it at its default " + defaultDriverName)
	}
	if _, err := socketPath(c.Endpoint); err != nil {
		return err
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		return fmt.Errorf("--log-format %q is not valid: use text or json", c.LogFormat)
	}
	if _, err := parseLevel(c.LogLevel); err != nil {
		return err
	}
	if c.ShutdownTimeout <= 0 {
		return errors.New("--shutdown-timeout must be positive, e.g. 30s")
	}
	return nil
}

// managedPrefixError is validateNode's refusal of --managed-nqn-prefix. The doctor reports
// the prefix as a check of its own (checkPrefix), so it tells this error from the others.
type managedPrefixError struct{ error }

// validateNode checks the node plugin's settings, the managed prefix last: an error of type
// managedPrefixError means every other node setting is valid.
func (c *Config) validateNode() error {
	if c.NodeID == "" {
		return errors.New("--node-id is empty and the hostname is unknown: set --node-id (NODE_ID) to the Kubernetes node name")
	}
	if c.MountStormLimit < 1 {
		return fmt.Errorf("--mount-storm-limit must be at least 1 (default %d)", mount.DefaultStormLimit)
	}
	if c.HealInterval <= 0 {
		return errors.New("--heal-interval must be positive, e.g. 5s")
	}
	if c.ManagedNQNPrefix == "" {
		return managedPrefixError{errors.New("--managed-nqn-prefix (CSI_MANAGED_NQN_PREFIX) is required in " + c.Mode +
			" mode: set it to the NQN prefix of this driver's volumes, e.g. " + nqnPrefix + "pvc- (NVMe subsystems outside it are never touched)")}
	}
	if err := nvme.ValidatePrefix(c.ManagedNQNPrefix); err != nil {
		return managedPrefixError{fmt.Errorf("--managed-nqn-prefix %q: %v", c.ManagedNQNPrefix, err)}
	}
	return nil
}

// missingSettingsError is validateController's refusal when settings the controller cannot
// work without are not set; flags names each as "--flag (ENV)".
type missingSettingsError struct {
	mode  string
	flags []string
}

func (e *missingSettingsError) Error() string {
	return fmt.Sprintf("%s mode needs %s: the controller manages volumes on the RDS over SSH", e.mode, strings.Join(e.flags, ", "))
}

// errHostKeyUnpinned starts validateController's refusal when the RDS's host key is neither
// pinned nor explicitly left unverified.
var errHostKeyUnpinned = errors.New("--rds-known-hosts (RDS_KNOWN_HOSTS) is required to verify the RDS host key")

// validateController checks the controller's settings for the RDS.
func (c *Config) validateController() error {
	var missing []string
	for _, s := range []struct{ val, flag string }{
		{c.RDSAddress, "--rds-address (RDS_ADDRESS)"}, {c.RDSUser, "--rds-user (RDS_USER)"}, {c.RDSKeyFile, "--rds-key-file (RDS_KEY_FILE)"},
	} {
		if s.val == "" {
			missing = append(missing, s.flag)
		}
	}
	if len(missing) > 0 {
		return &missingSettingsError{mode: c.Mode, flags: missing}
	}
	if c.RDSKnownHosts == "" && !c.RDSInsecureSkipHostKey {
		return fmt.Errorf("%w: create it with `ssh-keyscan -p %d %s > known_hosts`, or pass --rds-insecure-skip-host-key to opt out explicitly", errHostKeyUnpinned, c.RDSSSHPort, c.RDSAddress)
	}
	if c.RDSSSHPort < 1 || c.RDSSSHPort > 65535 {
		return fmt.Errorf("--rds-ssh-port %d is not a TCP port", c.RDSSSHPort)
	}
	if c.RDSMaxSessions < 1 {
		return errors.New("--rds-max-sessions must be at least 1 (default 4)")
	}
	if c.RDSCommandTimeout <= 0 {
		return errors.New("--rds-command-timeout must be positive, e.g. 60s")
	}
	if c.CapacityReserve < 0 {
		return errors.New("--capacity-reserve cannot be negative")
	}
	return nil
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// parseBytes accepts plain bytes or a binary-suffixed quantity (Ki, Mi, Gi, Ti; K, M, G, T
// are read as binary too, like RouterOS).
func parseBytes(s string) (int64, error) {
	s = strings.TrimSpace(s)
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"Ti", 1 << 40}, {"Gi", 1 << 30}, {"Mi", 1 << 20}, {"Ki", 1 << 10}, {"T", 1 << 40}, {"G", 1 << 30}, {"M", 1 << 20}, {"K", 1 << 10}} {
		if strings.HasSuffix(s, u.suffix) {
			s, mult = strings.TrimSuffix(s, u.suffix), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return 0, errors.New("not a non-negative whole number of bytes")
	}
	if n > (1<<63-1)/mult {
		return 0, errors.New("too large")
	}
	return n * mult, nil
}
