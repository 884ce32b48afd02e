package main

import (
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"srvlab.io/rds-csi/routeros"
)

// maxNVMePaths bounds nvmeAddresses: an RDS2216 has six storage ports, and a node that
// connects more paths per volume only multiplies its reconnect work during an outage.
const maxNVMePaths = 4

// reservedParamPrefix marks the parameters the external-provisioner adds itself (PVC name,
// namespace, …); they are accepted and ignored.
const reservedParamPrefix = "csi.storage.k8s.io/"

// volumeParams are a validated set of StorageClass parameters.
type volumeParams struct {
	volumePath  string
	nvmeAddress string         // "" until resolved for CreateVolume (see withAddress)
	paths       []string       // nvmeAddresses: every path, nvmeAddress first; nil for one path
	ints        map[string]int // every parameter that is set or has a default
}

// parseParams validates StorageClass parameters. Every problem is reported at once, each
// naming the parameter and what it accepts, so one edit of the StorageClass fixes them all.
func (c *controllerService) parseParams(params map[string]string) (*volumeParams, error) {
	p := &volumeParams{volumePath: c.cfg.RDSVolumePath, ints: map[string]int{}}
	var problems []string
	for _, o := range volumeOptions {
		if o.def != nil {
			p.ints[o.key] = *o.def
		}
	}
	keys := make([]string, 0, len(params))
	for k := range params {
		keys = append(keys, k)
	}
	slices.Sort(keys) // a stable message
	for _, k := range keys {
		v := params[k]
		switch {
		case strings.HasPrefix(k, reservedParamPrefix):
		case k == paramVolumePath:
			if msg := c.checkVolumePath(v); msg != "" {
				problems = append(problems, msg)
			}
			p.volumePath = v
		case k == paramNVMeAddress:
			if msg := checkNVMeAddress(v); msg != "" {
				problems = append(problems, fmt.Sprintf("parameter %s %q %s", paramNVMeAddress, v, msg))
			}
			p.nvmeAddress = v
		case k == paramNVMeAddresses:
			paths, msg := parseNVMeAddresses(v)
			if msg != "" {
				problems = append(problems, fmt.Sprintf("parameter %s %q %s", paramNVMeAddresses, v, msg))
			}
			p.paths = paths
		default:
			o, ok := lookupOption(k)
			if !ok {
				problems = append(problems, fmt.Sprintf("unknown parameter %q: the known ones are %s", k, strings.Join(knownParams(), ", ")))
				continue
			}
			n, err := o.parse(v)
			if err != nil {
				problems = append(problems, fmt.Sprintf("parameter %s %q %v", k, v, err))
				continue
			}
			p.ints[k] = n
		}
	}
	if p.paths != nil {
		switch {
		case p.nvmeAddress != "" && checkNVMeAddress(p.nvmeAddress) == "" && !sameAddress(p.nvmeAddress, p.paths[0]):
			problems = append(problems, fmt.Sprintf("parameter %s %q is not the first entry of %s %q: set %s alone (its first address is the primary path) or make %s its first entry",
				paramNVMeAddress, p.nvmeAddress, paramNVMeAddresses, params[paramNVMeAddresses], paramNVMeAddresses, paramNVMeAddress))
		case len(p.paths) == 1:
			p.nvmeAddress, p.paths = p.paths[0], nil // one path is plain nvmeAddress
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
	if !c.underBases(v) {
		allowed := "--rds-allowed-paths is empty"
		if len(c.cfg.RDSAllowedPaths) > 0 {
			allowed = "--rds-allowed-paths is " + strings.Join(c.cfg.RDSAllowedPaths, ",")
		}
		return fmt.Sprintf("parameter %s %q must be --rds-volume-path (%s) or a directory below it or below one of --rds-allowed-paths (%s); add the directory to --rds-allowed-paths to use it",
			paramVolumePath, v, c.cfg.RDSVolumePath, allowed)
	}
	return ""
}

// checkNVMeAddress says what is wrong with an NVMe/TCP target address ("" when nothing).
// The kernel connects to an IP only: it resolves no host names.
func checkNVMeAddress(v string) string {
	ip := net.ParseIP(v)
	switch {
	case ip == nil:
		return "must be the RDS's IP address (NVMe/TCP connects to an IP; the kernel resolves no host names)"
	case ip.IsUnspecified() || ip.IsMulticast():
		return "must be the RDS's unicast IP address"
	}
	return ""
}

// parseNVMeAddresses splits an nvmeAddresses value ("10.0.0.10,10.0.1.10") and says what
// is wrong with it ("" when nothing): every entry an IP, none twice (as IPs: "fd00::1" and
// "fd00:0::1" are one path), at most maxNVMePaths. The node reads the volume context
// with the same function.
func parseNVMeAddresses(v string) ([]string, string) {
	var paths, bad []string
	for _, a := range strings.Split(v, ",") {
		a = strings.TrimSpace(a)
		if msg := checkNVMeAddress(a); msg != "" {
			bad = append(bad, fmt.Sprintf("%q", a))
			continue
		}
		for _, seen := range paths {
			if sameAddress(seen, a) {
				return nil, fmt.Sprintf("names %s twice: each entry must be a different path to the RDS", a)
			}
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

// sameAddress compares two valid IP addresses.
func sameAddress(a, b string) bool { return net.ParseIP(a).Equal(net.ParseIP(b)) }

// withAddress fills in the NVMe/TCP address for a new volume: the nvmeAddress parameter,
// else --rds-address when that is an IP.
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

// volumeContext is what the node needs to attach the volume, and nothing it must look up:
// target, NQN as the RDS reports it, and the connection options (only those set or
// defaulted, so the node's own defaults apply to the rest).
func (p *volumeParams) volumeContext(d *routeros.Disk) map[string]string {
	vc := map[string]string{
		paramVolumePath:  p.volumePath,
		paramNVMeAddress: p.nvmeAddress,
		contextNQN:       d.NQN,
	}
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

// migrationTimeoutFrom reads migrationTimeoutSeconds from a volume context; PVs of the
// earlier driver, or without the key, get the default, and so does a bad value, with the
// error saying why.
func migrationTimeoutFrom(vc map[string]string) (seconds int, err error) {
	o := mustOption(paramMigrationTimeout)
	seconds, _, err = o.contextValue(vc)
	if err != nil {
		return *o.def, err
	}
	return seconds, nil
}
