package mount

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestParseOptions(t *testing.T) {
	cases := []struct {
		name      string
		fstype    string
		opts      []string
		wantFlags uintptr
		wantData  string
		wantErr   string // substring; "" means success
	}{
		{"none", "ext4", nil, 0, "", ""},
		{"generic flags", "ext4", []string{"ro", "noatime", "nodev", "nosuid", "noexec"},
			unix.MS_RDONLY | unix.MS_NOATIME | unix.MS_NODEV | unix.MS_NOSUID | unix.MS_NOEXEC, "", ""},
		{"rw clears nothing else", "xfs", []string{"rw", "relatime"}, unix.MS_RELATIME, "", ""},
		{"ext4 data options keep order", "ext4", []string{"discard", "data=ordered", "errors=remount-ro", "commit=30"},
			0, "discard,data=ordered,errors=remount-ro,commit=30", ""},
		{"xfs data options", "xfs", []string{"inode64", "logbsize=256k", "allocsize=64m", "nouuid", "nodiscard"},
			0, "inode64,logbsize=256k,allocsize=64m,nouuid,nodiscard", ""},
		{"duplicates collapse", "ext4", []string{"discard", "discard", "noatime", "noatime"}, unix.MS_NOATIME, "discard", ""},
		{"defaults is a no-op", "ext4", []string{"defaults", "sync"}, unix.MS_SYNCHRONOUS, "", ""},
		{"bind takes flags", "", []string{"ro", "nosuid"}, unix.MS_RDONLY | unix.MS_NOSUID, "", ""},

		{"values are the kernel's to judge", "ext4", []string{"data=fast", "commit=0x10"}, 0, "data=fast,commit=0x10", ""},

		{"empty option", "ext4", []string{""}, 0, "", "empty"},
		{"comma smuggles an option", "ext4", []string{"discard,nobarrier"}, 0, "", "','"},
		{"comma after a value", "ext4", []string{"data=ordered,errors=panic"}, 0, "", "','"},
		{"space", "ext4", []string{"noatime "}, 0, "", "contains ' '"},
		{"newline", "ext4", []string{"noatime\nro"}, 0, "", `contains '\n'`},
		{"control character in a value", "ext4", []string{"data=ordered\x00"}, 0, "", `contains '\x00'`},
		{"non-ascii", "ext4", []string{"noatimé"}, 0, "", "contains 'é'"},
		{"backslash", "ext4", []string{`data=ordered\054x`}, 0, "", `contains '\\'`},
		{"quote", "ext4", []string{`errors="panic"`}, 0, "", `contains '"'`},
		{"slash", "xfs", []string{"logbsize=../x"}, 0, "", "contains '/'"},
		{"unknown flag", "ext4", []string{"nofail"}, 0, "", "not supported"},
		{"unknown value option", "ext4", []string{"foo=bar"}, 0, "", "not supported"},
		{"xfs option on ext4", "ext4", []string{"inode64"}, 0, "", "not supported"},
		{"ext4 option on xfs", "xfs", []string{"data=ordered"}, 0, "", "not supported"},
		{"data option on a bind", "", []string{"discard"}, 0, "", "not supported for bind mounts"},
		{"unknown filesystem", "vfat", []string{"ro"}, 0, "", "unsupported filesystem"},
		{"flag given a value", "ext4", []string{"ro=1"}, 0, "", `takes no value; use "ro"`},
		{"word given a value", "ext4", []string{"discard=1"}, 0, "", "takes no value"},
		// The kernel reads barrier=00 as nobarrier: barrier stays a word.
		{"barrier given a value", "ext4", []string{"barrier=00"}, 0, "", "takes no value"},
		{"value missing", "ext4", []string{"data"}, 0, "", "needs a value (data=...)"},
		{"empty value", "ext4", []string{"data="}, 0, "", "empty value"},
		{"empty name", "ext4", []string{"=ordered"}, 0, "", "no name"},
		{"double equals", "ext4", []string{"data=ordered=journal"}, 0, "", "more than one '='"},
		{"overlong", "ext4", []string{strings.Repeat("a", 65)}, 0, "", "longer than 64"},
		{"ro and rw", "ext4", []string{"ro", "rw"}, 0, "", "contradict"},
		{"two atime modes", "ext4", []string{"noatime", "relatime"}, 0, "", "contradict"},
		{"discard and nodiscard", "xfs", []string{"discard", "nodiscard"}, 0, "", "contradict"},
		{"two data modes", "ext4", []string{"data=ordered", "data=journal"}, 0, "", "contradict"},
		{"two commit intervals", "ext4", []string{"commit=5", "commit=30"}, 0, "", `"commit=5" and "commit=30" contradict`},
		{"value-taking option contradicting its word", "ext4", []string{"noinit_itable", "init_itable=10"}, 0, "", "contradict"},
		{"nobarrier refused", "ext4", []string{"nobarrier"}, 0, "", "write ordering"},
		{"barrier=0 refused", "ext4", []string{"barrier=0"}, 0, "", "write ordering"},
		{"errors=panic refused", "ext4", []string{"errors=panic"}, 0, "", "crash the whole node"},
		{"norecovery refused", "xfs", []string{"norecovery"}, 0, "", "journal replay"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			o, err := ParseOptions(tc.fstype, tc.opts)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("ParseOptions(%q, %q) = %+v, %v; want an error containing %q", tc.fstype, tc.opts, o, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if o.Flags != tc.wantFlags || o.Data != tc.wantData {
				t.Errorf("ParseOptions(%q, %q) = flags %#x data %q; want %#x %q", tc.fstype, tc.opts, o.Flags, o.Data, tc.wantFlags, tc.wantData)
			}
			for _, s := range o.Strings {
				if !slices.Contains(tc.opts, s) {
					t.Errorf("Strings has %q, which was not given", s)
				}
			}
		})
	}
}

// kernelSamples gives each allow-listed option a value the kernel must
// accept; TestAllowListMountsOnKernel mounts every one of them, so the list
// cannot promise an option the kernel refuses.
var kernelSamples = map[string][][]string{
	"ext4": {
		{"discard"}, {"nodiscard"}, {"data=ordered"}, {"data=writeback"}, {"data=journal"},
		{"errors=remount-ro"}, {"errors=continue"}, {"commit=30"}, {"barrier"},
		{"journal_checksum"}, {"nojournal_checksum"}, {"auto_da_alloc"}, {"noauto_da_alloc"},
		{"delalloc"}, {"nodelalloc"}, {"dioread_nolock"}, {"dioread_lock"},
		{"block_validity"}, {"noblock_validity"}, {"init_itable=10"}, {"noinit_itable"},
		{"stripe=16"}, {"inode_readahead_blks=64"}, {"max_batch_time=15000"}, {"min_batch_time=0"},
		{"journal_ioprio=3"}, {"user_xattr"}, {"nombcache"}, {"usrquota"}, {"grpquota"},
	},
	"xfs": {
		{"discard"}, {"nodiscard"}, {"inode64"}, {"inode32"}, {"logbsize=64k"}, {"logbufs=4"},
		{"allocsize=1m"}, {"nouuid"}, {"largeio"}, {"nolargeio"}, {"swalloc"},
		{"wsync"}, {"filestreams"}, {"grpid"}, {"nogrpid"},
	},
}

func TestAllowListMountsOnKernel(t *testing.T) {
	requireLoop(t)
	for fstype, samples := range kernelSamples {
		t.Run(fstype, func(t *testing.T) {
			covered := map[string]bool{}
			for _, opts := range samples {
				for _, opt := range opts {
					key, _, _ := strings.Cut(opt, "=")
					covered[key] = true
				}
			}
			for key := range optionSets[fstype] {
				if !covered[key] {
					t.Errorf("allow-listed %s option %q has no kernel sample", fstype, key)
				}
			}
			ctx := testCtx(t)
			dev := formattedLoop(t, fstype)
			target := mountPoint(t)
			for _, opts := range samples {
				o, err := ParseOptions(fstype, opts)
				if err != nil {
					t.Errorf("ParseOptions(%q): %v", opts, err)
					continue
				}
				if err := Mount(ctx, dev.Path, target, fstype, o); err != nil {
					t.Errorf("kernel refused allow-listed %v: %v", opts, err)
					continue
				}
				if _, err := unmountOnce(ctx, target); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

// TestKernelJudgesValues: a value ParseOptions passes through but the
// filesystem does not understand is refused by the kernel, and the error
// names the option and says where the kernel's reason is.
func TestKernelJudgesValues(t *testing.T) {
	requireLoop(t)
	for fstype, opts := range map[string][]string{
		"ext4": {"data=fast", "commit=-1", "inode_readahead_blks=3", "journal_ioprio=9"},
		"xfs":  {"logbufs=9", "logbsize=32kk", "allocsize=0"},
	} {
		t.Run(fstype, func(t *testing.T) {
			ctx := testCtx(t)
			dev := formattedLoop(t, fstype)
			target := mountPoint(t)
			for _, opt := range opts {
				err := Mount(ctx, dev.Path, target, fstype, mustOptions(t, fstype, opt))
				if !errors.Is(err, unix.EINVAL) || !strings.Contains(err.Error(), opt) || !strings.Contains(err.Error(), "dmesg") {
					t.Errorf("Mount with %q = %v; want EINVAL naming the option and pointing at dmesg", opt, err)
				}
				if n := len(mountedAt(t, target)); n != 0 {
					t.Fatalf("%d mounts after the kernel refused %q", n, opt)
				}
			}
		})
	}
}

// TestOptionSetsDisjoint: ParseOptions looks a name up as a flag first, so
// a filesystem option spelled like a flag would never reach its data.
func TestOptionSetsDisjoint(t *testing.T) {
	for fstype, set := range optionSets {
		for name := range set {
			if _, ok := flagOptions[name]; ok {
				t.Errorf("%s option %q is also a generic flag", fstype, name)
			}
		}
	}
}
