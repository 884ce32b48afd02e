package routeros

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// The samples in testdata/ are copied byte for byte from reference/routeros-rds.md (real
// RDS output). Their expected values below are written out by hand from the reference,
// not produced by the parser.

type kv struct{ k, v string }

var goldenDiskFile = []kv{
	{"type", "file"}, {"slot", "vm-storage-001"}, {"slot-default", ""}, {"parent", ""}, {"fs", "-"},
	{"model", "/raid10/vm-storage-001.img"}, {"size", "1099511627776"}, {"mount-filesystem", "no"},
	{"mount-read-only", "no"}, {"compress", "no"}, {"sector-size", "512"}, {"raid-master", "none"},
	{"nvme-tcp-export", "yes"}, {"nvme-tcp-server-port", "4420"},
	{"nvme-tcp-server-nqn", "nqn.2026-09.com.mikrotik:rds2216.vm-storage-001"},
	{"nvme-tcp-server-allow-host-name", ""}, {"iscsi-export", "no"}, {"nfs-sharing", "no"},
	{"smb-sharing", "no"}, {"media-sharing", "no"}, {"media-interface", "none"}, {"swap", "no"},
	{"file-path", "/raid10/vm-storage-001.img"}, {"file-size", "1024.0GiB"}, {"file-offset", "0"},
}

var goldenDiskPool = []kv{
	{"type", "raid"}, {"slot", "raid10"}, {"slot-default", ""}, {"parent", ""}, {"fs-label", "ocp-storage"},
	{"fs-uuid", "40437dbc-2318-45dc-817b-b3bb95cf48ab"}, {"fs", "xfs"}, {"model", "RAID0 striped"},
	{"size", "16003143565312"}, {"free", "14789895307264"}, {"total-inodes", "1562806656"},
	{"free-inodes", "1562806652"}, {"use", "8%"}, {"mount-point", "raid10"}, {"mount-filesystem", "yes"},
	{"mount-read-only", "no"}, {"compress", "no"}, {"sector-size", "512"}, {"raid-type", "0"},
	{"raid-device-count", "4"}, {"raid-max-component-size", "none"}, {"raid-chunk-size", "256K"},
	{"raid-master", "none"}, {"state", "clean"}, {"raid-uuid", "eadca0af-ecff031c-239758ad-951a47de"},
	{"nvme-tcp-export", "no"}, {"iscsi-export", "no"}, {"nfs-sharing", "no"}, {"smb-sharing", "no"},
	{"media-sharing", "no"}, {"media-interface", "none"}, {"swap", "no"},
}

var goldenFiles = [][]kv{
	{{"name", "storage-pool/metal-csi"}, {"type", "directory"}, {"last-modified", "2025-11-11 16:47:07"}},
	{{"name", "storage-pool/metal-csi/pvc-ccdecfad-a8bf-572e-9120-464c4d99f12f.img"}, {"type", ".img"},
		{"file size", "10.0GiB"}, {"last-modified", "2025-11-11 14:32:41"}},
}

type goldenItem struct {
	index int
	flags string
	props []kv
}

var goldenSamples = []struct {
	file  string
	items []goldenItem
}{
	{"disk-file-7.24.4.txt", []goldenItem{{31, "Bt", goldenDiskFile}}},
	{"disk-pool-raid.txt", []goldenItem{{26, "BM", goldenDiskPool}}},
	{"file-print-detail.txt", []goldenItem{{0, "", goldenFiles[0]}, {1, "", goldenFiles[1]}}},
}

func readSample(t testing.TB, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// checkItems compares parsed items with the expectation, keys in order and exactly.
func checkItems(t testing.TB, label string, got []Item, want []goldenItem) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d items, want %d: %+v", label, len(got), len(want), got)
	}
	for i, w := range want {
		g := got[i]
		if g.Index != w.index || g.Flags != w.flags {
			t.Errorf("%s: item %d: index/flags %d %q, want %d %q", label, i, g.Index, g.Flags, w.index, w.flags)
		}
		if len(g.Keys) != len(w.props) || len(g.Props) != len(w.props) {
			t.Errorf("%s: item %d: keys %q, want %d keys", label, i, g.Keys, len(w.props))
		}
		for j, p := range w.props {
			if j < len(g.Keys) && g.Keys[j] != p.k {
				t.Errorf("%s: item %d: key %d is %q, want %q", label, i, j, g.Keys[j], p.k)
			}
			if v, ok := g.Props[p.k]; !ok || v != p.v {
				t.Errorf("%s: item %d: %s=%q (present %v), want %q", label, i, p.k, v, ok, p.v)
			}
		}
	}
}

func TestParseDetailGoldenSamples(t *testing.T) {
	for _, s := range goldenSamples {
		text := readSample(t, s.file)
		for _, variant := range []struct{ name, text string }{
			{"verbatim", text},
			{"crlf", strings.ReplaceAll(text, "\n", "\r\n")},
			{"no-final-newline", strings.TrimRight(text, "\n")},
		} {
			t.Run(s.file+"/"+variant.name, func(t *testing.T) {
				items, err := ParseDetail(variant.text)
				if err != nil {
					t.Fatal(err)
				}
				checkItems(t, variant.name, items, s.items)
			})
		}
	}
}

func TestParseDetailDiskGolden(t *testing.T) {
	items, err := ParseDetail(readSample(t, "disk-file-7.24.4.txt"))
	if err != nil || len(items) != 1 {
		t.Fatalf("items %v, err %v", items, err)
	}
	d, err := diskFromItem(items[0])
	if err != nil {
		t.Fatal(err)
	}
	want := Disk{Slot: "vm-storage-001", Type: "file", FilePath: "/raid10/vm-storage-001.img",
		FileSizeText: "1024.0GiB", NQN: "nqn.2026-09.com.mikrotik:rds2216.vm-storage-001",
		Model: "/raid10/vm-storage-001.img", Flags: "Bt", Size: 1 << 40, NVMeExport: true, NVMePort: 4420}
	d.Props = nil
	if !reflect.DeepEqual(d, want) {
		t.Errorf("disk\n got %+v\nwant %+v", d, want)
	}

	items, err = ParseDetail(readSample(t, "disk-pool-raid.txt"))
	if err != nil || len(items) != 1 {
		t.Fatalf("items %v, err %v", items, err)
	}
	pool, err := diskFromItem(items[0])
	if err != nil {
		t.Fatal(err)
	}
	if pool.Size != 16003143565312 || pool.Free != 14789895307264 || pool.MountPoint != "raid10" || pool.NVMeExport {
		t.Errorf("pool %+v", pool)
	}
	if pool.NQN != "raid10" {
		t.Errorf("a disk without nvme-tcp-server-nqn must report its slot as NQN, got %q", pool.NQN)
	}
}

func TestParseFilesGolden(t *testing.T) {
	files, err := ParseFiles(readSample(t, "file-print-detail.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 2 {
		t.Fatalf("files %+v", files)
	}
	dir, img := files[0], files[1]
	if dir.Path != "/storage-pool/metal-csi" || dir.Type != "directory" || dir.SizeText != "" ||
		dir.LastModified.Format("2006-01-02 15:04:05") != "2025-11-11 16:47:07" {
		t.Errorf("directory %+v", dir)
	}
	if img.Path != "/storage-pool/metal-csi/pvc-ccdecfad-a8bf-572e-9120-464c4d99f12f.img" || img.Type != ".img" ||
		img.SizeText != "10.0GiB" || img.Size != 10<<30 || img.LastModified.Format(time2) != "2025-11-11 14:32:41" {
		t.Errorf("image %+v", img)
	}
}

const time2 = "2006-01-02 15:04:05"

func TestParseDetailForms(t *testing.T) {
	cases := []struct {
		name string
		text string
		want []goldenItem
	}{
		{"empty", "", nil},
		{"blank lines", "\r\n\n  \n", nil},
		{"header only", "Flags: B - BLOCK-DEVICE; M - MOUNTED; t - NVME-TCP-EXPORT\n", nil},
		{"header only crlf", "Flags: B - BLOCK-DEVICE; M - MOUNTED; t - NVME-TCP-EXPORT\r\n\r\n", nil},
		{"wrapped header only", "Flags: B - BLOCK-DEVICE; M - MOUNTED;\n  t - NVME-TCP-EXPORT\n", nil},
		{"comment above item",
			"Flags: B - BLOCK-DEVICE\n;;; keep me\n 0 B type=file slot=\"a\"\n",
			[]goldenItem{{0, "B", []kv{{"type", "file"}, {"slot", "a"}}}}},
		{"comment on index line",
			" 0   ;;; keep me\n     type=file slot=\"a\"\n\n 1   type=file slot=\"b\"\n",
			[]goldenItem{{0, "", []kv{{"type", "file"}, {"slot", "a"}}}, {1, "", []kv{{"type", "file"}, {"slot", "b"}}}}},
		{"grouped integer wrapped between groups",
			" 5 B  type=file size=53 687\n       091 200 slot=\"x\"\n",
			[]goldenItem{{5, "B", []kv{{"type", "file"}, {"size", "53687091200"}, {"slot", "x"}}}}},
		{"grouped integer wrapped before groups",
			" 5 B  type=file size=53\n       687 091 200\n       slot=\"x\"\n",
			[]goldenItem{{5, "B", []kv{{"type", "file"}, {"size", "53687091200"}, {"slot", "x"}}}}},
		{"continuation line starting with digits is not an item",
			" 0 Bt type=file size=1 099 511\n       627 776 file-path=/p/a.img\n 1 Bt type=file size=2\n",
			[]goldenItem{{0, "Bt", []kv{{"type", "file"}, {"size", "1099511627776"}, {"file-path", "/p/a.img"}}},
				{1, "Bt", []kv{{"type", "file"}, {"size", "2"}}}}},
		{"value cut mid-token",
			"0 Bt file-path=/storage-pool/metal-csi/pvc-42f0d924\n     -8c1e-4d67.img slot=\"pvc-42f0d924\n     -8c1e\"\n",
			[]goldenItem{{0, "Bt", []kv{{"file-path", "/storage-pool/metal-csi/pvc-42f0d924-8c1e-4d67.img"}, {"slot", "pvc-42f0d924-8c1e"}}}}},
		{"quoted value cut at a space kept at the line end",
			"0 B model=\"RAID0 \n    striped\" fs=xfs\n",
			[]goldenItem{{0, "B", []kv{{"model", "RAID0 striped"}, {"fs", "xfs"}}}}},
		{"quoted value cut with the space after the indent",
			"0 B model=\"RAID0\n     striped\" fs=xfs\n",
			[]goldenItem{{0, "B", []kv{{"model", "RAID0 striped"}, {"fs", "xfs"}}}}},
		{"escapes in quoted values",
			`0   comment-ish="a\"b\\c\$d\_e\0Af\n"` + "\n",
			[]goldenItem{{0, "", []kv{{"comment-ish", "a\"b\\c$d e\nf\n"}}}}},
		{"timestamp wrapped at its space",
			" 0   name=a type=directory last-modified=jan/02/2025\n     10:30:45\n",
			[]goldenItem{{0, "", []kv{{"name", "a"}, {"type", "directory"}, {"last-modified", "jan/02/2025 10:30:45"}}}}},
		{"file size key wrapped at its space",
			" 1   name=p/x.img type=.img file\n     size=10.0GiB\n",
			[]goldenItem{{1, "", []kv{{"name", "p/x.img"}, {"type", ".img"}, {"file size", "10.0GiB"}}}}},
		{"whole-word keys",
			"0 B file-size=1.0GiB sector-size=512 size=1 073 741 824\n",
			[]goldenItem{{0, "B", []kv{{"file-size", "1.0GiB"}, {"sector-size", "512"}, {"size", "1073741824"}}}}},
		{"no flags column, two-digit index",
			"10   name=a\n11   name=b\n",
			[]goldenItem{{10, "", []kv{{"name", "a"}}}, {11, "", []kv{{"name", "b"}}}}},
		{"flags with a blank column",
			"Flags: B - BLOCK-DEVICE; M - MOUNTED; t - NVME-TCP-EXPORT\n 0 B t type=file\n 1 BM  type=raid\n",
			[]goldenItem{{0, "Bt", []kv{{"type", "file"}}}, {1, "BM", []kv{{"type", "raid"}}}}},
		{"unterminated quote is not reported",
			"0 B slot=\"abc\n",
			[]goldenItem{{0, "B", nil}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			items, err := ParseDetail(c.text)
			if err != nil {
				t.Fatal(err)
			}
			checkItems(t, c.name, items, c.want)
		})
	}
}

func TestParseDetailComments(t *testing.T) {
	items, err := ParseDetail(";;; above\n 0 B type=file\n 1 B  ;;; on the line\n      type=raid\n")
	if err != nil {
		t.Fatal(err)
	}
	if len(items) != 2 || items[0].Comment != "above" || items[1].Comment != "on the line" {
		t.Fatalf("items %+v", items)
	}
}

func TestParseDetailRejectsNonListing(t *testing.T) {
	for _, text := range []string{
		"bad command name prnt (line 1 column 7)\n",
		"syntax error (line 1 column 3)",
		"hello=world\n",
	} {
		if items, err := ParseDetail(text); err == nil {
			t.Errorf("%q: parsed as %+v, want an error", text, items)
		}
	}
}
