package mount

import (
	"fmt"
	"math/bits"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Options are validated mount options, ready for mount(2).
type Options struct {
	// Flags are the MS_* flags for mount(2).
	Flags uintptr
	// Data is the comma-separated filesystem-specific option string.
	Data string
	// Strings are the accepted options, in input order without duplicates
	// ("defaults" dropped), for records and log lines.
	Strings []string

	// fstype is the filesystem the options were validated for, so Mount
	// can refuse data meant for another filesystem.
	fstype string
}

// flagOption is a generic option that maps to mount(2) flags. Options in the
// same group contradict each other.
type flagOption struct {
	set, clear uintptr
	group      string
}

var flagOptions = map[string]flagOption{
	"ro":          {set: unix.MS_RDONLY, group: "ro/rw"},
	"rw":          {clear: unix.MS_RDONLY, group: "ro/rw"},
	"noatime":     {set: unix.MS_NOATIME, group: "atime"},
	"relatime":    {set: unix.MS_RELATIME, group: "atime"},
	"strictatime": {set: unix.MS_STRICTATIME, group: "atime"},
	"nodiratime":  {set: unix.MS_NODIRATIME},
	"lazytime":    {set: unix.MS_LAZYTIME},
	"nodev":       {set: unix.MS_NODEV},
	"nosuid":      {set: unix.MS_NOSUID},
	"noexec":      {set: unix.MS_NOEXEC},
	"sync":        {set: unix.MS_SYNCHRONOUS},
	"dirsync":     {set: unix.MS_DIRSYNC},
}

// allowedFlags is every flag ParseOptions can produce; Mount refuses others
// (MS_BIND, MS_MOVE, MS_REMOUNT and propagation flags have their own calls).
var allowedFlags = func() uintptr {
	var all uintptr
	for _, o := range flagOptions {
		all |= o.set | o.clear
	}
	return all
}()

// dataOption is a filesystem-specific option passed in mount(2)'s data.
// value is nil for a plain word; otherwise it validates the part after '='.
type dataOption struct {
	value func(string) error
	group string
}

// The allow-lists hold only options a stock kernel accepts on a
// filesystem made by Format; TestAllowListMountsOnKernel mounts each one.
// Left out on purpose: acl/noacl, xfs quotas and project quotas (they depend
// on kernel config or mkfs features), sunit/swidth (need an aligned mkfs).
var ext4Options = map[string]dataOption{
	"discard":              {group: "discard"},
	"nodiscard":            {group: "discard"},
	"data":                 {value: oneOf("ordered", "writeback", "journal")},
	"errors":               {value: oneOf("remount-ro", "continue")},
	"commit":               {value: uintRange(0, 3600)},
	"barrier":              {},
	"journal_checksum":     {group: "journal_checksum"},
	"nojournal_checksum":   {group: "journal_checksum"},
	"auto_da_alloc":        {group: "auto_da_alloc"},
	"noauto_da_alloc":      {group: "auto_da_alloc"},
	"delalloc":             {group: "delalloc"},
	"nodelalloc":           {group: "delalloc"},
	"dioread_nolock":       {group: "dioread"},
	"dioread_lock":         {group: "dioread"},
	"block_validity":       {group: "block_validity"},
	"noblock_validity":     {group: "block_validity"},
	"init_itable":          {value: uintRange(0, 1000), group: "init_itable"},
	"noinit_itable":        {group: "init_itable"},
	"stripe":               {value: uintRange(1, 1<<24)},
	"inode_readahead_blks": {value: powerOfTwo(1 << 30)},
	"max_batch_time":       {value: uintRange(0, 1<<24)},
	"min_batch_time":       {value: uintRange(0, 1<<24)},
	"journal_ioprio":       {value: uintRange(0, 7)},
	"user_xattr":           {},
	"nombcache":            {},
	"usrquota":             {},
	"grpquota":             {},
}

var xfsOptions = map[string]dataOption{
	"discard":     {group: "discard"},
	"nodiscard":   {group: "discard"},
	"inode64":     {group: "inode"},
	"inode32":     {group: "inode"},
	"logbsize":    {value: size},
	"logbufs":     {value: uintRange(2, 8)},
	"allocsize":   {value: size},
	"nouuid":      {},
	"largeio":     {group: "largeio"},
	"nolargeio":   {group: "largeio"},
	"swalloc":     {},
	"wsync":       {},
	"filestreams": {},
	"grpid":       {group: "grpid"},
	"nogrpid":     {group: "grpid"},
}

// optionSets maps each supported filesystem to its data options; ""
// (bind mounts) takes generic flags only.
var optionSets = map[string]map[string]dataOption{
	"":     {},
	"ext4": ext4Options,
	"xfs":  xfsOptions,
}

// refused explains options that are valid for the kernel but unsafe for
// volumes holding someone's data.
var refused = map[string]string{
	"nobarrier":    "it turns off write ordering, so a crash of the node or the storage loses committed data",
	"barrier=0":    "it turns off write ordering, so a crash of the node or the storage loses committed data",
	"errors=panic": "a filesystem error on one volume would crash the whole node",
	"norecovery":   "it skips journal replay and shows stale or inconsistent data",
	"noload":       "it skips journal replay and shows stale or inconsistent data",
}

// ParseOptions validates opts for fstype ("ext4", "xfs", or "" for a bind
// mount) against an allow-list and converts them for mount(2). Anything not
// on the list is refused: unknown words, values of the wrong shape, ','
// inside an option (which would smuggle extra options into the data
// string), '=' in the wrong place, empty options and contradictions.
func ParseOptions(fstype string, opts []string) (Options, error) {
	dataSet, ok := optionSets[fstype]
	if !ok {
		return Options{}, fmt.Errorf("mount options: unsupported filesystem type %q; supported: ext4, xfs", fstype)
	}
	o := Options{fstype: fstype}
	var data []string
	seenGroup := map[string]string{} // group → option that claimed it
	seenKey := map[string]string{}   // key → whole option, for key=value
	for _, opt := range opts {
		if err := checkShape(opt); err != nil {
			return Options{}, err
		}
		if slices.Contains(o.Strings, opt) || opt == "defaults" {
			continue
		}
		if why, ok := refused[opt]; ok {
			return Options{}, fmt.Errorf("mount option %q is refused: %s", opt, why)
		}
		key, value, hasValue := strings.Cut(opt, "=")
		var group string
		if f, ok := flagOptions[opt]; ok {
			o.Flags = o.Flags&^f.clear | f.set
			group = f.group
		} else if d, ok := dataSet[key]; ok {
			if err := checkValue(opt, key, value, hasValue, d); err != nil {
				return Options{}, err
			}
			if prev, dup := seenKey[key]; dup {
				return Options{}, fmt.Errorf("mount options %q and %q contradict each other; keep one", prev, opt)
			}
			seenKey[key] = opt
			group = d.group
			data = append(data, opt)
		} else {
			return Options{}, fmt.Errorf("mount option %q is not supported for %s; allowed: %s",
				opt, describeFS(fstype), strings.Join(allowedNames(dataSet), ", "))
		}
		if group != "" {
			if prev, dup := seenGroup[group]; dup {
				return Options{}, fmt.Errorf("mount options %q and %q contradict each other; keep one", prev, opt)
			}
			seenGroup[group] = opt
		}
		o.Strings = append(o.Strings, opt)
	}
	o.Data = strings.Join(data, ",")
	return o, nil
}

// checkShape refuses the characters that could change how the kernel
// splits or reads the option string.
func checkShape(opt string) error {
	if opt == "" {
		return fmt.Errorf("empty mount option; remove it")
	}
	if len(opt) > 64 {
		return fmt.Errorf("mount option %.64q... is longer than 64 bytes", opt)
	}
	for _, r := range opt {
		if r == ',' {
			return fmt.Errorf("mount option %q contains ','; give each option separately", opt)
		}
		if r <= ' ' || r > '~' || r == '\\' || r == '"' || r == '\'' {
			return fmt.Errorf("mount option %q contains a space, quote, backslash or non-ASCII character", opt)
		}
	}
	return nil
}

func checkValue(opt, key, value string, hasValue bool, d dataOption) error {
	switch {
	case d.value == nil && hasValue:
		return fmt.Errorf("mount option %q takes no value; use %q", opt, key)
	case d.value != nil && !hasValue:
		return fmt.Errorf("mount option %q needs a value (%s=...)", opt, key)
	case d.value != nil:
		if err := d.value(value); err != nil {
			return fmt.Errorf("mount option %q: %w", opt, err)
		}
	}
	return nil
}

func oneOf(allowed ...string) func(string) error {
	return func(v string) error {
		if !slices.Contains(allowed, v) {
			return fmt.Errorf("value %q is not one of %s", v, strings.Join(allowed, ", "))
		}
		return nil
	}
}

func uintRange(lo, hi uint64) func(string) error {
	return func(v string) error {
		n, err := parseDecimal(v)
		if err != nil {
			return err
		}
		if n < lo || n > hi {
			return fmt.Errorf("value %d is outside %d..%d", n, lo, hi)
		}
		return nil
	}
}

func powerOfTwo(hi uint64) func(string) error {
	return func(v string) error {
		n, err := parseDecimal(v)
		if err != nil {
			return err
		}
		if n > hi || bits.OnesCount64(n) > 1 {
			return fmt.Errorf("value %d is not 0 or a power of two up to %d", n, hi)
		}
		return nil
	}
}

// size accepts a byte count with an optional k, m or g suffix, as xfs does.
func size(v string) error {
	digits := strings.TrimRight(v, "kmgKMG")
	if len(v)-len(digits) > 1 {
		return fmt.Errorf("value %q has more than one unit suffix", v)
	}
	n, err := parseDecimal(digits)
	if err != nil {
		return err
	}
	if n == 0 || n > 1<<30 {
		return fmt.Errorf("value %q is outside 1..1g", v)
	}
	return nil
}

// parseDecimal accepts plain decimal digits only: no sign, no hex, no
// spaces, nothing strconv's looser forms would let through.
func parseDecimal(v string) (uint64, error) {
	if v == "" || len(v) > 12 || strings.TrimLeft(v, "0123456789") != "" {
		return 0, fmt.Errorf("value %q is not a decimal number", v)
	}
	return strconv.ParseUint(v, 10, 64)
}

func describeFS(fstype string) string {
	if fstype == "" {
		return "bind mounts"
	}
	return fstype
}

func allowedNames(dataSet map[string]dataOption) []string {
	var names []string
	for name := range flagOptions {
		names = append(names, name)
	}
	for name, d := range dataSet {
		if d.value != nil {
			name += "=..."
		}
		names = append(names, name)
	}
	slices.Sort(names)
	return names
}
