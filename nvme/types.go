package nvme

// Target is where a volume's subsystem is exported.
type Target struct {
	Address string // IP address of the target (NVMe/TCP takes no host names)
	Port    int    // TCP port; 0 means 4420 (the kernel's own default for tcp is 8009)
	NQN     string // subsystem NQN, inside the managed prefix
	NSID    int    // namespace ID; 0 means 1
}

// Options are the per-connection kernel options; nil leaves the field at its default.
// CtrlLossTmo defaults to -1 (reconnect forever, so appliance reboots never turn a volume
// read-only) and ReconnectDelay to 5 seconds; the others to the kernel's defaults.
type Options struct {
	CtrlLossTmo    *int // seconds; -1 = never give up
	ReconnectDelay *int // seconds between reconnect attempts, >= 1
	KeepAliveTmo   *int // seconds, >= 1
	FastIOFailTmo  *int // seconds; -1 = off (I/O is queued until the controller is lost)
	NrIOQueues     *int // >= 1
	QueueSize      *int // 16..1024
}

// Controller is one NVMe controller (a path to a subsystem), as sysfs shows it.
type Controller struct {
	Name      string // nvme3
	State     string // live, connecting, resetting, deleting, "deleting (no IO)", dead, new
	Transport string // tcp
	Address   string // the raw address attribute: traddr=…,trsvcid=…[,src_addr=…]
	TrAddr    string // parsed from Address
	TrSvcID   int    // parsed from Address
	HostNQN   string
	HostID    string
}

// Live reports whether the controller can carry I/O now.
func (c Controller) Live() bool { return c.State == "live" }

// Disk is the usable block device of a namespace.
type Disk struct {
	Name         string // nvme1n2: found in sysfs, never built from numbers
	DevPath      string // <DevRoot>/<Name>
	Major, Minor uint32
	SizeBytes    int64
	NSID         int
	NQN          string
	WWID         string       // stable namespace identifier (e.g. uuid.…), "" if the kernel shows none
	Controllers  []Controller // all controllers of the subsystem
}

// Health is the state of a volume's controllers, for the node's volume condition.
type Health struct {
	Controllers []Controller
	Live        bool // at least one controller is live
	Connected   bool // at least one controller exists (false = gone)
}

// Subsystem is one kernel NVMe subsystem, managed by this driver or not.
type Subsystem struct {
	Name        string // nvme-subsys1
	NQN         string
	Managed     bool // inside the guard's prefix
	Controllers []Controller
	Disks       []Disk
}
