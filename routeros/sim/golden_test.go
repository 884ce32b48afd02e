package sim

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// The reference hardware: pool raid10 (16 TB RAID0 of 4 devices) holding the file disk
// vm-storage-001 of 1 TiB and other files worth 113 736 630 272 bytes, 4 inodes in use.
var raid10 = Pool{
	Name:        "raid10",
	Size:        16_003_143_565_312,
	FSLabel:     "ocp-storage",
	FSUUID:      "40437dbc-2318-45dc-817b-b3bb95cf48ab",
	FS:          "xfs",
	Model:       "RAID0 striped",
	RAIDUUID:    "eadca0af-ecff031c-239758ad-951a47de",
	RAIDDevices: 4,
	TotalInodes: 1_562_806_656,
}

const addVMStorage001 = `/disk add type=file file-path=/raid10/vm-storage-001.img file-size=1T slot=vm-storage-001 ` +
	`nvme-tcp-export=yes nvme-tcp-server-port=4420 nvme-tcp-server-nqn="nqn.2026-09.com.mikrotik:rds2216.vm-storage-001"`

func mustExec(t testing.TB, s *Sim, line string) string {
	t.Helper()
	out, err := s.Exec(context.Background(), line)
	if err != nil {
		t.Fatalf("%s: %v", line, err)
	}
	return out
}

// printAt runs a command as a connection with the given console width would.
func printAt(t testing.TB, s *Sim, line string, width int) string {
	t.Helper()
	out, err := s.execLine(context.Background(), line, width)
	if err != nil {
		t.Fatalf("%s: %v", line, err)
	}
	return out
}

func newSim(t testing.TB, opts Options) *Sim {
	t.Helper()
	if opts.Dir == "" {
		opts.Dir = t.TempDir()
	}
	s, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// referenceSim rebuilds the reference hardware's state.
func referenceSim(t testing.TB) *Sim {
	t.Helper()
	s := newSim(t, Options{Pools: []Pool{raid10}})
	filler := s.HostPath("/raid10/images/filler.img")
	if err := createSparse(filler, 113_736_630_272); err != nil {
		t.Fatal(err)
	}
	mustExec(t, s, addVMStorage001)
	return s
}

func golden(t testing.TB, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

var itemIndex = regexp.MustCompile(`(?m)^( ?\d+) `)

// maskIndex hides item numbers (they are positions in the whole menu, which differ between
// the hardware and the simulator) but keeps their width, so alignment is still checked.
func maskIndex(s string) string {
	return itemIndex.ReplaceAllStringFunc(s, func(m string) string {
		return strings.Repeat("#", len(m)-1) + " "
	})
}

// itemBlock returns the printed item whose first line contains marker.
func itemBlock(t testing.TB, listing, marker string) string {
	t.Helper()
	for _, block := range strings.Split(listing, "\n\n") {
		block = strings.TrimPrefix(block, "\n")
		lines := strings.SplitN(block, "\n", 2)
		if strings.HasPrefix(lines[0], "Flags:") && len(lines) == 2 {
			lines = strings.SplitN(lines[1], "\n", 2)
			block = strings.Join(lines, "\n")
		}
		if strings.Contains(lines[0], marker) {
			return strings.TrimSuffix(block, "\n") + "\n"
		}
	}
	t.Fatalf("no item with %q in:\n%s", marker, listing)
	return ""
}

// The hardware samples are reproduced byte for byte (modulo index) at every console width
// their line lengths allow and at no other: the file disk at 230 to 255 columns, the pool at
// 230 to 240 (so the hardware console was 230 to 240 wide), /file at 77 to 80.
func TestGoldenDiskFileSample(t *testing.T) {
	want := golden(t, "disk-file-7.24.4.txt")
	s := referenceSim(t)
	for width := 225; width <= 260; width++ {
		got := printAt(t, s, `/disk print detail where slot="vm-storage-001"`, width)
		match := maskIndex(got) == maskIndex(want)
		if inRange := width >= 230 && width <= 255; match != inRange {
			t.Errorf("width %d: matches the sample: %v, want %v; got:\n%s", width, match, inRange, got)
		}
	}
}

func TestGoldenDiskPoolSample(t *testing.T) {
	want := golden(t, "disk-pool-7.24.4.txt")
	s := referenceSim(t)
	for width := 225; width <= 245; width++ {
		// The pool's flag column is three wide because the listing also shows an exported disk.
		all := printAt(t, s, `/disk print detail`, width)
		if !strings.HasPrefix(all, "Flags: B - BLOCK-DEVICE; M - MOUNTED; t - NVME-TCP-EXPORT\n") {
			t.Fatalf("legend: %q", strings.SplitN(all, "\n", 2)[0])
		}
		got := itemBlock(t, all, `slot="raid10"`)
		match := maskIndex(got) == maskIndex(want)
		if inRange := width >= 230 && width <= 240; match != inRange {
			t.Errorf("width %d: matches the sample: %v, want %v; got:\n%s", width, match, inRange, got)
		}
	}
}

func TestGoldenPoolCapacityQuery(t *testing.T) {
	s := referenceSim(t)
	got := printAt(t, s, `/disk print detail where mount-point="raid10"`, 235)
	want := "Flags: B - BLOCK-DEVICE; M - MOUNTED\n" + strings.Replace(golden(t, "disk-pool-7.24.4.txt"), "BM  ", "BM ", 1)
	// Alone in its listing the pool has two flag columns, so everything shifts left by one.
	want = strings.ReplaceAll(want, "\n       ", "\n      ")
	if maskIndex(got) != maskIndex(want) {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
}

func TestGoldenFilePrintSample(t *testing.T) {
	want := golden(t, "file-print.txt")
	s := newSim(t, Options{Location: time.UTC})
	img := s.HostPath("/storage-pool/metal-csi/pvc-ccdecfad-a8bf-572e-9120-464c4d99f12f.img")
	if err := createSparse(img, 10<<30); err != nil {
		t.Fatal(err)
	}
	for path, stamp := range map[string]string{img: "2025-11-11 14:32:41", filepath.Dir(img): "2025-11-11 16:47:07"} {
		mt, _ := time.ParseInLocation("2006-01-02 15:04:05", stamp, time.UTC)
		if err := os.Chtimes(path, mt, mt); err != nil {
			t.Fatal(err)
		}
	}
	for width := 74; width <= 84; width++ {
		got := printAt(t, s, `/file print detail where name~"^storage-pool/metal-csi"`, width)
		match := maskIndex(got) == maskIndex(want)
		if inRange := width >= 77 && width <= 80; match != inRange {
			t.Errorf("width %d: matches the sample: %v, want %v; got:\n%s", width, match, inRange, got)
		}
	}
}
