package routeros

import (
	"fmt"
	"strings"
	"testing"
)

// listing1000 builds a 1 000-disk `print detail` listing from the real file-disk sample,
// each with its own slot, path and NQN, wrapped like the hardware at the given width.
func listing1000(tb testing.TB, width int) string {
	header, items := splitSample(tb, readSample(tb, "disk-file-7.24.4.txt"))
	proto := items[0]
	many := make([]wrapItem, 1000)
	for i := range many {
		slot := fmt.Sprintf("pvc-%08d-8c1e-4d67-9a1b-0123456789ab", i)
		props := make([]string, len(proto.props))
		for j, p := range proto.props {
			props[j] = strings.ReplaceAll(p, "vm-storage-001", slot)
		}
		many[i] = wrapItem{head: fmt.Sprintf("%4d Bt ", i), props: props}
	}
	return rewrap(header, many, width)
}

func TestListing1000Parses(t *testing.T) {
	for _, width := range []int{80, 230} {
		items, err := ParseDetail(listing1000(t, width))
		if err != nil {
			t.Fatal(err)
		}
		if len(items) != 1000 {
			t.Fatalf("width %d: %d items", width, len(items))
		}
		for i, it := range items {
			want := fmt.Sprintf("pvc-%08d-8c1e-4d67-9a1b-0123456789ab", i)
			if it.Index != i || it.Props["slot"] != want || it.Props["size"] != "1099511627776" ||
				it.Props["file-path"] != "/raid10/"+want+".img" || len(it.Keys) != len(goldenDiskFile) {
				t.Fatalf("width %d: item %d: %+v", width, i, it)
			}
		}
	}
}

// BenchmarkParseDetail1000: parsing a 1 000-disk listing (target < 5 ms/op).
func BenchmarkParseDetail1000(b *testing.B) {
	for _, width := range []int{80, 230} {
		text := listing1000(b, width)
		b.Run(fmt.Sprintf("width%d", width), func(b *testing.B) {
			b.SetBytes(int64(len(text)))
			b.ReportAllocs()
			for b.Loop() {
				items, err := ParseDetail(text)
				if err != nil || len(items) != 1000 {
					b.Fatal(err, len(items))
				}
			}
		})
	}
}
