package main

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"srvlab.io/rds-csi/nvme"
	"srvlab.io/rds-csi/routeros"
)

// StorageClass parameters, which the controller copies into each volume's context under
// the same keys. The earlier RDS driver's PVs carry the same context keys, and the node
// reads them, so they must never be renamed.
const (
	paramVolumePath  = "volumePath"
	paramNVMeAddress = "nvmeAddress"
	// paramNVMeAddresses lists every NVMe/TCP path to the RDS, comma separated, the
	// primary first; the volume context carries it under the same key, and nvmeAddress
	// (the first entry) beside it for readers that know one path only.
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

// volumeOption is one whole-number volume option: a StorageClass parameter and the
// volume-context key it becomes.
type volumeOption struct {
	key string
	// def is what the controller writes into the context when the class leaves the
	// option out; nil: nothing is written and the node's default applies (nvme's for the
	// connect options, which also covers the earlier driver's PVs).
	def      *int
	min, max int
	meaning  string
	// connect sets the option on an NVMe connection; nil for options that are not one.
	connect func(o *nvme.Options, v int)
}

func intp(v int) *int { return &v }

// volumeOptions is the one table of whole-number volume options: the controller checks
// StorageClass parameters against it, the node the volume context, the doctor names the
// parameters behind the kernel's connect options from it, and the README's table is
// tested against it. Controller and node enforce the same limits, so a value is refused
// when the PVC is created, not when a pod first starts.
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

// lookupOption returns the table entry for key.
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

// contextValue reads the option from a volume context: its value, or its default when
// the context leaves it out (set is false then). Options without a default are absent.
func (o volumeOption) contextValue(vc map[string]string) (v int, set bool, err error) {
	raw, ok := vc[o.key]
	if !ok || strings.TrimSpace(raw) == "" {
		if o.def != nil {
			return *o.def, false, nil
		}
		return 0, false, nil
	}
	v, err = o.parse(raw)
	if err != nil {
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
