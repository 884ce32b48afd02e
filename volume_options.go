package main

import (
	"fmt"
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"srvlab.io/rds-csi/nvme"
	"srvlab.io/rds-csi/routeros"
)

// StorageClass parameters, copied into each volume's context under the same keys. The
// earlier RDS driver's PVs carry the same keys and the node reads them: never rename one.
const (
	paramVolumePath  = "volumePath"
	paramNVMeAddress = "nvmeAddress"
	// paramNVMeAddresses lists every NVMe/TCP path, comma separated, the primary first;
	// nvmeAddress (the first entry) stays beside it for readers that know one path only.
	paramNVMeAddresses    = "nvmeAddresses"
	paramNVMePort         = "nvmePort"
	paramCtrlLossTmo      = "ctrlLossTmo"
	paramReconnectDelay   = "reconnectDelay"
	paramKeepAliveTmo     = "keepAliveTmo"
	paramFastIOFailTmo    = "fastIoFailTmo"
	paramNrIOQueues       = "nrIoQueues"
	paramQueueSize        = "queueSize"
	paramMigrationTimeout = "migrationTimeoutSeconds"
	contextNQN            = "nqn" // set by the controller from what the RDS reports
)

// maxNVMePaths bounds nvmeAddresses: an RDS2216 has six storage ports, and more paths per
// volume only multiply a node's reconnect work during an outage.
const maxNVMePaths = 4

// volumeOption is one whole-number volume option: a StorageClass parameter and the
// volume-context key it becomes.
type volumeOption struct {
	key string
	// def is written into the context when the class leaves the option out; nil: nothing
	// is, and the node's default applies (also to the earlier driver's PVs).
	def      *int
	min, max int
	meaning  string
	connect  func(o *nvme.Options, v int) // nil for options that are not connect options
}

func intp(v int) *int { return &v }

// volumeOptions is the one table of whole-number volume options: the controller checks
// StorageClass parameters against it, the node the volume context, the doctor names the
// kernel's connect options from it, and the README's table is tested against it. Both
// sides enforce the same limits, so a value is refused when the PVC is created.
var volumeOptions = []volumeOption{
	{paramNVMePort, intp(routeros.DefaultNVMePort), 1, 65535, "the TCP port the RDS exports NVMe/TCP on", nil},
	{paramCtrlLossTmo, intp(nvme.DefaultCtrlLossTmo), -1, 31536000, "seconds a node keeps reconnecting after losing the RDS; -1 reconnects forever, so an RDS reboot never turns a volume read-only",
		func(o *nvme.Options, v int) { o.CtrlLossTmo = &v }},
	{paramReconnectDelay, intp(nvme.DefaultReconnectDelay), 1, 3600, "seconds between reconnect attempts",
		func(o *nvme.Options, v int) { o.ReconnectDelay = &v }},
	{paramKeepAliveTmo, nil, 1, 3600, "NVMe keep-alive timeout in seconds; 0 would switch keep-alive off, so a dead RDS is never noticed",
		func(o *nvme.Options, v int) { o.KeepAliveTmo = &v }},
	{paramFastIOFailTmo, nil, -1, 3600, "seconds before I/O fails while reconnecting; -1 queues I/O until the controller is lost",
		func(o *nvme.Options, v int) { o.FastIOFailTmo = &v }},
	{paramNrIOQueues, nil, 1, 1024, "NVMe I/O queues per connection",
		func(o *nvme.Options, v int) { o.NrIOQueues = &v }},
	{paramQueueSize, nil, 16, 1024, "NVMe I/O queue depth, within the kernel's limits",
		func(o *nvme.Options, v int) { o.QueueSize = &v }},
	{paramMigrationTimeout, intp(int(defaultMigrationTimeout.Seconds())), 30, 3600, "seconds a KubeVirt live migration may keep a block volume on two nodes before it is reported", nil},
}

func lookupOption(key string) (volumeOption, bool) {
	i := slices.IndexFunc(volumeOptions, func(o volumeOption) bool { return o.key == key })
	if i < 0 {
		return volumeOption{}, false
	}
	return volumeOptions[i], true
}

// mustOption returns the table entry for a key the code itself names.
func mustOption(key string) volumeOption {
	o, ok := lookupOption(key)
	if !ok {
		panic("volume option " + key + " is not in volumeOptions")
	}
	return o
}

// parse reads a value of the option; the error says what the option accepts.
func (o volumeOption) parse(raw string) (int, error) {
	n, err := strconv.Atoi(strings.TrimSpace(raw))
	if err != nil || n < o.min || n > o.max {
		return 0, fmt.Errorf("must be a whole number from %d to %d (%s)", o.min, o.max, o.meaning)
	}
	return n, nil
}

// contextValue reads the option from a volume context: its value, or (set false) its
// default when the context leaves it out; options without a default are then 0.
func (o volumeOption) contextValue(vc map[string]string) (v int, set bool, err error) {
	raw, ok := vc[o.key]
	if !ok || strings.TrimSpace(raw) == "" {
		if o.def != nil {
			return *o.def, false, nil
		}
		return 0, false, nil
	}
	if v, err = o.parse(raw); err != nil {
		return 0, false, fmt.Errorf("volume context %s=%q %w: fix the StorageClass parameter %s", o.key, raw, err, o.key)
	}
	return v, true, nil
}

// knownParams lists every StorageClass parameter, for the message about an unknown one.
func knownParams() []string {
	keys := []string{paramVolumePath, paramNVMeAddress, paramNVMeAddresses}
	for _, o := range volumeOptions {
		keys = append(keys, o.key)
	}
	return keys
}

// migrationTimeoutFrom reads migrationTimeoutSeconds from a volume context; a missing or
// bad value gives the default (the error says why).
func migrationTimeoutFrom(vc map[string]string) (int, error) {
	o := mustOption(paramMigrationTimeout)
	seconds, _, err := o.contextValue(vc)
	if err != nil {
		return *o.def, err
	}
	return seconds, nil
}

// checkNVMeAddress says what is wrong with an NVMe/TCP target address ("" when nothing):
// the kernel connects to an IP only and resolves no host names.
func checkNVMeAddress(v string) string {
	switch ip := net.ParseIP(v); {
	case ip == nil:
		return "must be the RDS's IP address (NVMe/TCP connects to an IP; the kernel resolves no host names)"
	case ip.IsUnspecified() || ip.IsMulticast():
		return "must be the RDS's unicast IP address"
	}
	return ""
}

// parseNVMeAddresses splits an nvmeAddresses value ("10.0.0.10,10.0.1.10") and says what
// is wrong with it ("" when nothing): every entry an IP, none twice (compared as IPs), at
// most maxNVMePaths. Controller and node both read it with this.
func parseNVMeAddresses(v string) ([]string, string) {
	var paths, bad []string
	for a := range strings.SplitSeq(v, ",") {
		a = strings.TrimSpace(a)
		if checkNVMeAddress(a) != "" {
			bad = append(bad, strconv.Quote(a))
			continue
		}
		if slices.ContainsFunc(paths, func(seen string) bool { return sameAddress(seen, a) }) {
			return nil, fmt.Sprintf("names %s twice: each entry must be a different path to the RDS", a)
		}
		paths = append(paths, a)
	}
	switch {
	case len(bad) > 0:
		return nil, fmt.Sprintf("has %s, which is not an IP address: list the RDS's IPs on each storage network, comma separated, like 10.0.0.10,10.0.1.10 (NVMe/TCP connects to an IP; the kernel resolves no host names)", strings.Join(bad, ", "))
	case len(paths) > maxNVMePaths:
		return nil, fmt.Sprintf("lists %d paths; at most %d are supported: keep one address per storage network", len(paths), maxNVMePaths)
	}
	return paths, ""
}

// sameAddress compares two valid IP addresses ("fd00::1" and "fd00:0::1" are one).
func sameAddress(a, b string) bool { return net.ParseIP(a).Equal(net.ParseIP(b)) }

// volumeParams are a validated set of StorageClass parameters.
type volumeParams struct {
	volumePath  string
	nvmeAddress string         // "" until withAddress
	paths       []string       // nvmeAddresses, nvmeAddress first; nil for one path
	ints        map[string]int // every option that is set or has a default
}

// parseParams validates StorageClass parameters, reporting every problem at once so one
// edit of the StorageClass fixes them all.
func (c *controllerService) parseParams(params map[string]string) (*volumeParams, error) {
	p := &volumeParams{volumePath: c.cfg.RDSVolumePath, ints: map[string]int{}}
	var problems []string
	add := func(format string, a ...any) { problems = append(problems, fmt.Sprintf(format, a...)) }
	for _, o := range volumeOptions {
		if o.def != nil {
			p.ints[o.key] = *o.def
		}
	}
	for _, k := range slices.Sorted(maps.Keys(params)) {
		v := params[k]
		switch o, known := lookupOption(k); {
		case strings.HasPrefix(k, reservedParamPrefix):
		case k == paramVolumePath:
			if msg := c.checkVolumePath(v); msg != "" {
				add("%s", msg)
			}
			p.volumePath = v
		case k == paramNVMeAddress:
			if msg := checkNVMeAddress(v); msg != "" {
				add("parameter %s %q %s", k, v, msg)
			}
			p.nvmeAddress = v
		case k == paramNVMeAddresses:
			paths, msg := parseNVMeAddresses(v)
			if msg != "" {
				add("parameter %s %q %s", k, v, msg)
			}
			p.paths = paths
		case !known:
			add("unknown parameter %q: the known ones are %s", k, strings.Join(knownParams(), ", "))
		default:
			if n, err := o.parse(v); err != nil {
				add("parameter %s %q %v", k, v, err)
			} else {
				p.ints[k] = n
			}
		}
	}
	if p.paths != nil {
		switch {
		case p.nvmeAddress != "" && checkNVMeAddress(p.nvmeAddress) == "" && !sameAddress(p.nvmeAddress, p.paths[0]):
			add("parameter %s %q is not the first entry of %s %q: set %s alone (its first address is the primary path) or make %s its first entry",
				paramNVMeAddress, p.nvmeAddress, paramNVMeAddresses, params[paramNVMeAddresses], paramNVMeAddresses, paramNVMeAddress)
		case len(p.paths) == 1:
			p.nvmeAddress, p.paths = p.paths[0], nil
		default:
			p.nvmeAddress = p.paths[0]
		}
	}
	if len(problems) > 0 {
		return nil, status.Errorf(codes.InvalidArgument, "invalid StorageClass parameters: %s", strings.Join(problems, "; "))
	}
	return p, nil
}

// checkVolumePath says what is wrong with a volumePath parameter ("" when nothing is).
func (c *controllerService) checkVolumePath(v string) string {
	if err := routeros.ValidatePath(v + "/x.img"); err != nil || !strings.HasPrefix(v, "/") {
		return fmt.Sprintf("parameter %s %q must be a clean absolute RouterOS directory like %s (letters, digits, '.', '_', '-' and '/' only, no trailing '/')",
			paramVolumePath, v, c.cfg.RDSVolumePath)
	}
	if c.underBases(v) {
		return ""
	}
	allowed := "--rds-allowed-paths is empty"
	if len(c.cfg.RDSAllowedPaths) > 0 {
		allowed = "--rds-allowed-paths is " + strings.Join(c.cfg.RDSAllowedPaths, ",")
	}
	return fmt.Sprintf("parameter %s %q must be --rds-volume-path (%s) or a directory below it or below one of --rds-allowed-paths (%s); add the directory to --rds-allowed-paths to use it",
		paramVolumePath, v, c.cfg.RDSVolumePath, allowed)
}

// withAddress fills in the NVMe/TCP address of a new volume: nvmeAddress, else
// --rds-address when that is an IP.
func (p *volumeParams) withAddress(rdsAddress string) error {
	if p.nvmeAddress != "" {
		return nil
	}
	if msg := checkNVMeAddress(rdsAddress); msg != "" {
		return status.Errorf(codes.InvalidArgument, "parameter %s is not set and --rds-address %q cannot stand in for it: it %s; set %s in the StorageClass to the RDS's IP on the storage network",
			paramNVMeAddress, rdsAddress, msg, paramNVMeAddress)
	}
	p.nvmeAddress = rdsAddress
	return nil
}

// volumeContext is all the node needs to attach the volume: target, the NQN the RDS
// reports, and the connect options set or defaulted (the node's defaults apply to the rest).
func (p *volumeParams) volumeContext(d *routeros.Disk) map[string]string {
	vc := map[string]string{paramVolumePath: p.volumePath, paramNVMeAddress: p.nvmeAddress, contextNQN: d.NQN}
	if len(p.paths) > 1 {
		vc[paramNVMeAddresses] = strings.Join(p.paths, ",")
	}
	for k, v := range p.ints {
		vc[k] = strconv.Itoa(v)
	}
	if d.NVMePort != 0 {
		vc[paramNVMePort] = strconv.Itoa(d.NVMePort) // what the RDS really exports on
	}
	return vc
}
