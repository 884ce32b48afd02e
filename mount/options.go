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
	Flags   uintptr  // MS_* flags
	Data    string   // the comma-separated filesystem-specific options
	Strings []string // the accepted options in input order, without duplicates or "defaults"
	fstype  string   // what they were validated for: Mount refuses them for another filesystem
}

// flagOption is a generic option that maps to mount(2) flags; options of one group contradict.
type flagOption struct {
	set, clear uintptr
	group      string
}

var flagOptions = map[string]flagOption{
	"ro": {set: unix.MS_RDONLY, group: "ro/rw"}, "rw": {clear: unix.MS_RDONLY, group: "ro/rw"},
	"noatime": {set: unix.MS_NOATIME, group: "atime"}, "relatime": {set: unix.MS_RELATIME, group: "atime"},
	"strictatime": {set: unix.MS_STRICTATIME, group: "atime"},
	"nodiratime":  {set: unix.MS_NODIRATIME}, "lazytime": {set: unix.MS_LAZYTIME},
	"nodev": {set: unix.MS_NODEV}, "nosuid": {set: unix.MS_NOSUID}, "noexec": {set: unix.MS_NOEXEC},
	"sync": {set: unix.MS_SYNCHRONOUS}, "dirsync": {set: unix.MS_DIRSYNC},
}

// allowedFlags is every flag ParseOptions can produce; Mount refuses others (bind, move,
// remount and propagation have their own calls).
var allowedFlags = func() (all uintptr) {
	for _, o := range flagOptions {
		all |= o.set | o.clear
	}
	return all
}()

// dataOption is an allow-listed filesystem option: a word, or name=value when takesValue.
// Its value is the kernel's to judge (EINVAL, which Mount explains); here it only has to
// pass checkShape. A word stays a word on purpose: the kernel reads "barrier=00" as nobarrier.
type dataOption struct {
	takesValue bool
	group      string // options of one group contradict; a value option is its own group
}

// dataOptions builds an allow-list from words, value options and groups ("a/b").
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

// optionSets holds each filesystem's data options ("": bind mounts, flags only): only what a
// stock kernel accepts on a filesystem made by Format (TestAllowListMountsOnKernel mounts
// each). Left out: acl/noacl and quotas that depend on kernel config or mkfs features,
// sunit/swidth (need an aligned mkfs).
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

// refused are options the kernel accepts but that endanger a volume's data; the kernel
// matches values exactly (errors=PANIC is EINVAL), so the exact spelling is enough.
var refused = map[string]string{
	"nobarrier": noOrdering, "barrier=0": noOrdering, "norecovery": noReplay, "noload": noReplay,
	"errors=panic": "a filesystem error on one volume would crash the whole node",
}

// maxOptionLength bounds one option: the longest allowed name with a size fits many times.
const maxOptionLength = 64

// ParseOptions validates opts for fstype ("ext4", "xfs", or "" for a bind mount) and
// converts them for mount(2): allow-listed names only, each a word or name=value as the name
// requires, of safe characters (checkShape); unsafe options and contradictions are refused.
func ParseOptions(fstype string, opts []string) (Options, error) {
	dataSet, ok := optionSets[fstype]
	if !ok {
		return Options{}, fmt.Errorf("mount options: unsupported filesystem type %q; supported: ext4, xfs", fstype)
	}
	o := Options{fstype: fstype}
	var data []string
	seenGroup := map[string]string{} // group → the option that claimed it
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
			names := slices.Collect(maps.Keys(flagOptions))
			for n, d := range dataSet {
				if d.takesValue {
					n += "=..."
				}
				names = append(names, n)
			}
			slices.Sort(names)
			return Options{}, fmt.Errorf("mount option %q is not supported for %s; allowed: %s",
				opt, cmp.Or(fstype, "bind mounts"), strings.Join(names, ", "))
		case hasValue && !d.takesValue:
			return Options{}, fmt.Errorf("mount option %q takes no value; use %q", opt, name)
		case !hasValue && d.takesValue:
			return Options{}, fmt.Errorf("mount option %q needs a value (%s=...)", opt, name)
		}
		group := d.group
		if isFlag {
			o.Flags, group = o.Flags&^f.clear|f.set, f.group
		} else {
			data = append(data, opt)
		}
		if prev, dup := seenGroup[group]; dup && group != "" {
			return Options{}, fmt.Errorf("mount options %q and %q contradict each other; keep one", prev, opt)
		}
		seenGroup[group] = opt
		o.Strings = append(o.Strings, opt)
	}
	o.Data = strings.Join(data, ",")
	return o, nil
}

// checkShape accepts name or name=value of letters, digits, '_', '-' and '.', at most
// maxOptionLength bytes: a ',' would smuggle in another option, and spaces, quotes,
// backslashes, control and non-ASCII characters mean something to some parser on the way.
func checkShape(opt string) error {
	const allowed = "options hold only letters, digits, '_', '-', '.' and one '=' between name and value"
	name, value, hasValue := strings.Cut(opt, "=")
	switch {
	case opt == "":
		return fmt.Errorf("empty mount option; remove it")
	case len(opt) > maxOptionLength:
		return fmt.Errorf("mount option %.64q... is longer than %d bytes", opt, maxOptionLength)
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
