package mount

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
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

// dataOption is a filesystem-specific option passed in mount(2)'s data:
// a plain word, or name=value when takesValue. What the value means is the
// kernel's to check (it refuses a bad one with EINVAL, which Mount
// explains); here a value only has to be a safe token (checkShape). A word
// stays a word on purpose: the kernel also reads "barrier=00" as nobarrier.
// Options of one group contradict each other.
type dataOption struct {
	takesValue bool
	group      string
}

// dataOptions builds an allow-list: words are plain options, values take
// name=value, and each group ("a/b") lists options that contradict each other.
// A value option is its own group until put in another: a second value for the
// same name contradicts the first.
func dataOptions(words, values string, groups ...string) map[string]dataOption {
	set := map[string]dataOption{}
	for _, w := range strings.Fields(words) {
		set[w] = dataOption{}
	}
	for _, v := range strings.Fields(values) {
		set[v] = dataOption{takesValue: true, group: v}
	}
	for _, g := range groups {
		for name := range strings.SplitSeq(g, "/") {
			set[name] = dataOption{takesValue: set[name].takesValue, group: g}
		}
	}
	return set
}

// optionSets maps each supported filesystem to its data options; ""
// (bind mounts) takes generic flags only. The allow-lists hold only options
// a stock kernel accepts on a filesystem made by Format;
// TestAllowListMountsOnKernel mounts each one. Left out on purpose: acl/noacl,
// xfs quotas and project quotas (they depend on kernel config or mkfs
// features), sunit/swidth (need an aligned mkfs).
var optionSets = map[string]map[string]dataOption{
	"": {},
	"ext4": dataOptions("barrier user_xattr nombcache usrquota grpquota",
		"data errors commit init_itable stripe inode_readahead_blks max_batch_time min_batch_time journal_ioprio",
		"discard/nodiscard", "journal_checksum/nojournal_checksum", "auto_da_alloc/noauto_da_alloc",
		"delalloc/nodelalloc", "dioread_nolock/dioread_lock", "block_validity/noblock_validity",
		"init_itable/noinit_itable"),
	"xfs": dataOptions("nouuid swalloc wsync filestreams", "logbsize logbufs allocsize",
		"discard/nodiscard", "inode64/inode32", "largeio/nolargeio", "grpid/nogrpid"),
}

const (
	noOrdering = "it turns off write ordering, so a crash of the node or the storage loses committed data"
	noReplay   = "it skips journal replay and shows stale or inconsistent data"
)

// refused explains options that are valid for the kernel but unsafe for
// volumes holding someone's data. The kernel matches values exactly
// (errors=PANIC is EINVAL), so the exact spelling is enough.
var refused = map[string]string{
	"nobarrier":    noOrdering,
	"barrier=0":    noOrdering,
	"errors=panic": "a filesystem error on one volume would crash the whole node",
	"norecovery":   noReplay,
	"noload":       noReplay,
}

// maxOptionLength bounds one option: the longest allowed name with a
// number or size fits many times over.
const maxOptionLength = 64

// ParseOptions validates opts for fstype ("ext4", "xfs", or "" for a bind
// mount) and converts them for mount(2). Each option must be a name on the
// allow-list, given as a word or as name=value as that name requires, with
// a value of safe characters only (see checkShape); unsafe options and
// contradictions are refused. Whether a value is one the filesystem
// understands is left to the kernel.
func ParseOptions(fstype string, opts []string) (Options, error) {
	dataSet, ok := optionSets[fstype]
	if !ok {
		return Options{}, fmt.Errorf("mount options: unsupported filesystem type %q; supported: ext4, xfs", fstype)
	}
	o := Options{fstype: fstype}
	var data []string
	seenGroup := map[string]string{} // group → option that claimed it
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
		name, _, hasValue := strings.Cut(opt, "=")
		f, isFlag := flagOptions[name]
		d, isData := dataSet[name] // the sets share no name, so d is zero for a flag
		switch {
		case !isFlag && !isData:
			return Options{}, fmt.Errorf("mount option %q is not supported for %s; allowed: %s",
				opt, cmp.Or(fstype, "bind mounts"), strings.Join(allowedNames(dataSet), ", "))
		case hasValue && !d.takesValue:
			return Options{}, fmt.Errorf("mount option %q takes no value; use %q", opt, name)
		case !hasValue && d.takesValue:
			return Options{}, fmt.Errorf("mount option %q needs a value (%s=...)", opt, name)
		}
		group := d.group
		if isFlag {
			o.Flags = o.Flags&^f.clear | f.set
			group = f.group
		} else {
			data = append(data, opt)
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

// checkShape accepts a name or name=value made of letters, digits, '_',
// '-' and '.', up to maxOptionLength bytes. Everything else could change
// how the kernel splits or reads the option string: ',' would smuggle in
// another option, and spaces, quotes, backslashes, control and non-ASCII
// characters have meanings to some parser on the way.
func checkShape(opt string) error {
	const allowed = "options hold only letters, digits, '_', '-', '.' and one '=' between name and value"
	if opt == "" {
		return fmt.Errorf("empty mount option; remove it")
	}
	if len(opt) > maxOptionLength {
		return fmt.Errorf("mount option %.64q... is longer than %d bytes", opt, maxOptionLength)
	}
	name, value, hasValue := strings.Cut(opt, "=")
	switch {
	case name == "":
		return fmt.Errorf("mount option %q has no name before '='", opt)
	case hasValue && value == "":
		return fmt.Errorf("mount option %q has an empty value; give %s=VALUE or leave the option out", opt, name)
	}
	for i, r := range opt {
		switch {
		case r == ',':
			return fmt.Errorf("mount option %q contains ','; give each option separately", opt)
		case r == '=' && i == len(name):
		case r == '=':
			return fmt.Errorf("mount option %q has more than one '='; %s", opt, allowed)
		case !('a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' || strings.ContainsRune("_-.", r)):
			return fmt.Errorf("mount option %q contains %q; %s", opt, r, allowed)
		}
	}
	return nil
}

// allowedNames lists every option fstype's set allows, for error messages.
func allowedNames(dataSet map[string]dataOption) []string {
	names := slices.Collect(maps.Keys(flagOptions))
	for name, d := range dataSet {
		if d.takesValue {
			name += "=..."
		}
		names = append(names, name)
	}
	slices.Sort(names)
	return names
}
