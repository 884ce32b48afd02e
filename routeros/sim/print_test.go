package sim

import (
	"fmt"
	"strings"
	"testing"
	"unicode"
)

func TestHumanSize(t *testing.T) {
	tests := []struct {
		n    int64
		want string
	}{
		{0, "0"},
		{10239, "10239"},
		{10240, "10.0KiB"},
		{1 << 20, "1024.0KiB"},
		{1 << 30, "1024.0MiB"},
		{1536 << 20, "1536.0MiB"},
		{10 << 30, "10.0GiB"},
		{50 << 30, "50.0GiB"},
		{1 << 40, "1024.0GiB"}, // the hardware's vm-storage-001
		{10 << 40, "10.0TiB"},
		{16_003_143_565_312, "14.6TiB"},
	}
	for _, tt := range tests {
		if got := humanSize(tt.n); got != tt.want {
			t.Errorf("humanSize(%d) = %q, want %q", tt.n, got, tt.want)
		}
	}
}

func TestGroupDigits(t *testing.T) {
	tests := map[string]string{
		"0":             "0",
		"512":           "512",
		"4420":          "4 420",
		"53687091200":   "53 687 091 200",
		"1099511627776": "1 099 511 627 776",
		"-1234":         "-1 234",
	}
	for in, want := range tests {
		if got := groupDigits(in); got != want {
			t.Errorf("groupDigits(%q) = %q, want %q", in, got, want)
		}
	}
}

// At 80 columns a pvc file-path does not fit on a line: it breaks inside the value before
// a '-', the way the hardware split `…/pvc-xxx` + `-yyy.img`.
func TestWrapBreaksInsideLongValues(t *testing.T) {
	s := newSim(t, Options{})
	mustExec(t, s, `/disk add type=file file-path="/storage-pool/metal-csi/pvc-ccdecfad-a8bf-572e-9120-464c4d99f12f.img" file-size=1G slot="pvc-ccdecfad-a8bf-572e-9120-464c4d99f12f"`)
	got := mustExec(t, s, `/disk print detail where slot="pvc-ccdecfad-a8bf-572e-9120-464c4d99f12f"`)
	want := "     file-path=/storage-pool/metal-csi/pvc-ccdecfad-a8bf-572e-9120\n" +
		"     -464c4d99f12f.img file-size=1024.0MiB file-offset=0\n"
	if !strings.HasSuffix(got, want) {
		t.Errorf("got:\n%s\nwant it to end with:\n%s", got, want)
	}
}

func TestBreakPoint(t *testing.T) {
	tests := []struct {
		tok          string
		avail, klen  int
		want         int
		wantFirstBit string
	}{
		{"file-path=/a/pvc-1234-5678.img", 20, 10, 16, "file-path=/a/pvc"},
		{"file-path=/a/pvc-1234-5678.img", 25, 10, 21, "file-path=/a/pvc-1234"},
		{"file-path=/aaaaaaaaaaaaaaaaaaaaaa", 15, 10, 15, "file-path=/aaaa"}, // no '-': hard
		{"slot-default=abc", 8, 13, 8, "slot-def"},                           // the '-' is in the key
		{"x=abc", 0, 2, 1, "x"}, // always progress
	}
	for _, tt := range tests {
		got := breakPoint(tt.tok, tt.avail, tt.klen)
		if got != tt.want || tt.tok[:got] != tt.wantFirstBit {
			t.Errorf("breakPoint(%q, %d, %d) = %d (%q), want %d (%q)", tt.tok, tt.avail, tt.klen, got, tt.tok[:got], tt.want, tt.wantFirstBit)
		}
	}
}

// Whatever the width, wrapping only inserts line breaks and indentation: no line is wider
// than the console, continuation lines are indented to the property column, and the
// characters are those of the unwrapped listing.
func TestWrapAtEveryWidth(t *testing.T) {
	s := newSim(t, Options{})
	for i, slot := range []string{"pvc-ccdecfad-a8bf-572e-9120-464c4d99f12f", "a", "pvc-0000000000000000000000000000000000000000000000"} {
		mustExec(t, s, fmt.Sprintf(`/disk add type=file file-path="/storage-pool/metal-csi/%s.img" file-size=%dG slot=%q nvme-tcp-export=yes nvme-tcp-server-nqn="nqn.2000-02.com.mikrotik:%s" nvme-tcp-server-allow-host-name="nqn.2014-08.org.nvmexpress:uuid:%d"`, slot, i+1, slot, slot, i))
	}
	mustExec(t, s, `/disk set [find slot=a] comment="short note"`)
	flat := printAt(t, s, `/disk print detail`, -1)
	squash := func(s string) string {
		return strings.Map(func(r rune) rune {
			if unicode.IsSpace(r) {
				return -1
			}
			return r
		}, s)
	}
	for width := 20; width <= 260; width++ {
		got := printAt(t, s, `/disk print detail`, width)
		if squash(got) != squash(flat) {
			t.Fatalf("width %d changed the content:\n%s", width, got)
		}
		for _, line := range strings.Split(strings.TrimSuffix(got, "\n"), "\n") {
			if line == "" || strings.HasPrefix(line, "Flags:") {
				continue
			}
			// " N BMt " is 7 wide: two index columns and three flag columns in this listing.
			if lead := len(line) - len(strings.TrimLeft(line, " ")); !itemIndex.MatchString(line) && lead != 7 {
				t.Fatalf("width %d: continuation indented %d, want 7: %q", width, lead, line)
			}
			if len(line) > width && !strings.Contains(line, ";;;") {
				t.Fatalf("width %d: line of %d: %q", width, len(line), line)
			}
		}
	}
}

func TestPrintLayout(t *testing.T) {
	s := newSim(t, Options{Width: 120})
	if got, want := mustExec(t, s, `/disk print detail where slot="nothing"`), "Flags: B - BLOCK-DEVICE; M - MOUNTED; t - NVME-TCP-EXPORT\n"; got != want {
		t.Errorf("empty result: %q, want only the legend %q", got, want)
	}
	if got := mustExec(t, s, `/file print detail where name="nothing"`); got != "" {
		t.Errorf("empty /file result: %q, want nothing", got)
	}
	mustExec(t, s, `/disk add type=file file-path=/storage-pool/a.img file-size=1M slot=a comment="made by test"`)
	want := "Flags: B - BLOCK-DEVICE\n" +
		" 1 B ;;; made by test\n" +
		"     type=file slot=\"a\" slot-default=\"\" parent=\"\" fs=- model=\"/storage-pool/a.img\" size=1 048 576 mount-filesystem=no\n" +
		"     mount-read-only=no compress=no sector-size=512 raid-master=none nvme-tcp-export=no iscsi-export=no nfs-sharing=no\n" +
		"     smb-sharing=no media-sharing=no media-interface=none swap=no file-path=/storage-pool/a.img file-size=1024.0KiB\n" +
		"     file-offset=0\n"
	if got := mustExec(t, s, `/disk print detail where slot=a`); got != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
	crlf := newSim(t, Options{CRLF: true})
	got := mustExec(t, crlf, `/disk print detail where type=raid`)
	if strings.Count(got, "\r\n") != strings.Count(got, "\n") || strings.Count(got, "\n") < 3 {
		t.Errorf("CRLF output has bare newlines: %q", got)
	}
}

func TestIndexWidthFollowsTheWidestIndex(t *testing.T) {
	s := newSim(t, Options{Width: -1})
	for i := range 11 {
		mustExec(t, s, fmt.Sprintf(`/disk add type=file file-path=/storage-pool/d%d.img file-size=1M slot=d%d`, i, i))
	}
	got := mustExec(t, s, `/disk print detail where slot~"^d(0|10)\$"`)
	if !strings.Contains(got, "\n 1 B type=file slot=\"d0\"") || !strings.Contains(got, "\n11 B type=file slot=\"d10\"") {
		t.Errorf("indices not right-aligned:\n%s", got)
	}
}
