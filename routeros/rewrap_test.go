package routeros

import (
	"math/rand/v2"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// wrapItem is an item as RouterOS renders it before wrapping: the index line's head (index
// and flags column, up to the property column), an optional comment and the properties as
// printed (`key=value`, quotes and digit groups included).
type wrapItem struct {
	head    string
	comment string
	props   []string
}

var (
	indexLineRE = regexp.MustCompile(`^ *\d+ `)
	keyStartRE  = regexp.MustCompile(`(?:^| )(file size|[a-z][a-z0-9-]*)=`)
)

// splitSample turns a sample that is wrapped between properties only (as all the reference
// samples are) back into wrapItems. It is deliberately naive and independent of the parser:
// items start at lines that begin with an index, properties at ` key=`.
func splitSample(t testing.TB, text string) (header string, items []wrapItem) {
	t.Helper()
	var logical []string
	for _, line := range strings.Split(strings.TrimRight(text, "\n"), "\n") {
		switch {
		case strings.HasPrefix(line, "Flags:"):
			header = line
		case strings.TrimSpace(line) == "":
		case indexLineRE.MatchString(line):
			loc := keyStartRE.FindStringIndex(line[len(indexLineRE.FindString(line))-1:])
			col := len(indexLineRE.FindString(line)) - 1 + loc[0] + 1
			items = append(items, wrapItem{head: line[:col]})
			logical = append(logical, line[col:])
		default:
			logical[len(logical)-1] += " " + strings.TrimSpace(line)
		}
	}
	for i, l := range logical {
		starts := keyStartRE.FindAllStringIndex(l, -1)
		for j, s := range starts {
			end := len(l)
			if j+1 < len(starts) {
				end = starts[j+1][0]
			}
			items[i].props = append(items[i].props, strings.TrimSpace(l[s[0]:end]))
		}
	}
	return header, items
}

// rewrap renders items the way the hardware wraps at `width` columns: properties separated
// by one space; a property that does not fit on the line starts a new line indented to the
// property column; a property longer than a whole line is cut at the width without losing a
// character (the cut can fall anywhere in the value, at a space too).
func rewrap(header string, items []wrapItem, width int) string {
	var b strings.Builder
	if header != "" {
		b.WriteString(header + "\n")
	}
	for _, it := range items {
		if it.comment != "" {
			b.WriteString(";;; " + it.comment + "\n")
		}
		col, indent := len(it.head), strings.Repeat(" ", len(it.head))
		b.WriteString(it.head)
		first := true
		for _, p := range it.props {
			if !first && col+1+len(p) <= width {
				b.WriteString(" " + p)
				col += 1 + len(p)
				continue
			}
			if !first {
				b.WriteString("\n" + indent)
				col = len(indent)
			}
			first = false
			for col+len(p) > width {
				n := max(width-col, 1)
				b.WriteString(p[:n] + "\n" + indent)
				p, col = p[n:], len(indent)
			}
			b.WriteString(p)
			col += len(p)
		}
		b.WriteString("\n\n")
	}
	return b.String()
}

func TestParseDetailRewrappedWidths(t *testing.T) {
	for _, s := range goldenSamples {
		header, items := splitSample(t, readSample(t, s.file))
		for width := 40; width <= 200; width++ {
			text := rewrap(header, items, width)
			got, err := ParseDetail(text)
			if err != nil {
				t.Fatalf("%s at width %d: %v\n%s", s.file, width, err, text)
			}
			checkItems(t, s.file+" at width "+strconv.Itoa(width), got, s.items)
			if t.Failed() {
				t.Fatalf("text:\n%s", text)
			}
		}
	}
}

// TestRewrapReproducesSamples pins the re-wrapper itself: at the hardware's widths it
// prints the samples exactly as the hardware did.
func TestRewrapReproducesSamples(t *testing.T) {
	for _, c := range []struct {
		file  string
		width int
	}{{"disk-file-7.24.4.txt", 230}, {"disk-pool-raid.txt", 230}, {"file-print-detail.txt", 80}} {
		text := readSample(t, c.file)
		header, items := splitSample(t, text)
		got := strings.TrimRight(rewrap(header, items, c.width), "\n")
		if got != strings.TrimRight(text, "\n") {
			t.Errorf("%s at width %d:\n got %q\nwant %q", c.file, c.width, got, text)
		}
	}
}

// fuzzWrap renders items with every kind of break the parser is specified to undo, placed
// at random: a break at a separator (the space dropped, or kept at the end of the line or
// after the indent), a break at a space inside an unquoted value (grouped digits, date and
// time, `file size`) with the space dropped, and a cut anywhere inside a property that
// keeps every character. Like the hardware's, its lines are not arbitrarily short: a
// property that starts a line keeps its whole key on that line (the hardware moves a
// property that does not fit to a fresh line, where any key fits), and a line holds at
// least minSegment characters (the hardware's hold at least 33 at width 40).
func fuzzWrap(rng *rand.Rand, header string, items []wrapItem, density int) string {
	const minSegment = 9
	var b strings.Builder
	if header != "" {
		b.WriteString(header + "\n")
	}
	var since int // characters written since the last break
	breakHere := func() bool { return since >= minSegment && rng.IntN(64) < density }
	for _, it := range items {
		if it.comment != "" {
			b.WriteString(";;; " + it.comment + "\n")
		}
		indent := strings.Repeat(" ", len(it.head))
		newline := func(extra string) {
			b.WriteString(extra + "\n" + indent)
			since = 0
		}
		b.WriteString(it.head)
		since = minSegment // the head is not a segment of its own
		for i, p := range it.props {
			atLineStart := i == 0
			if i > 0 {
				if breakHere() {
					switch rng.IntN(3) {
					case 0:
						newline("")
					case 1:
						newline(" ")
					default:
						newline("")
						b.WriteString(" ")
					}
					atLineStart = true
				} else {
					b.WriteString(" ")
					since++
				}
			}
			firstCut := 1
			if atLineStart {
				firstCut = strings.IndexByte(p, '=') + 1
			}
			inQuote, escaped := false, false
			for j := 0; j < len(p); j++ {
				c := p[j]
				if j >= firstCut && breakHere() {
					newline("") // a cut that keeps every character…
					if c == ' ' && !inQuote && rng.IntN(2) == 0 {
						continue // …or a break that drops a space outside quotes
					}
				}
				b.WriteByte(c)
				since++
				switch {
				case escaped:
					escaped = false
				case c == '\\' && inQuote:
					escaped = true
				case c == '"':
					inQuote = !inQuote
				}
			}
		}
		b.WriteString("\n")
		if rng.IntN(2) == 0 {
			b.WriteString("\n")
		}
	}
	if rng.IntN(4) == 0 {
		return strings.ReplaceAll(b.String(), "\n", "\r\n")
	}
	return b.String()
}

// syntheticItems covers what the samples do not: escapes and spaces inside quotes, empty
// values, both timestamp forms, long paths, comments, a four-digit index.
var syntheticItems = []struct {
	item wrapItem
	want goldenItem
}{
	{wrapItem{head: "1000 B t ", comment: "created by rds-csi", props: []string{
		`type=file`, `slot="pvc-42f0d924-8c1e-4d67-9a1b-0123456789ab"`,
		`fs-label="a label with spaces \"quoted\" and \\ back \$HOME"`, `parent=""`,
		`size=53 687 091 200`, `free=0`, `file-offset=0`, `nvme-tcp-server-port=4420`,
		`file-path=/storage-pool/metal-csi/pvc-42f0d924-8c1e-4d67-9a1b-0123456789ab.img`,
		`nvme-tcp-server-nqn="nqn.2000-02.com.mikrotik:pvc-42f0d924-8c1e-4d67-9a1b-0123456789ab"`,
		`total-inodes=1 562 806 656`, `use=8%`}},
		goldenItem{1000, "Bt", []kv{{"type", "file"}, {"slot", "pvc-42f0d924-8c1e-4d67-9a1b-0123456789ab"},
			{"fs-label", `a label with spaces "quoted" and \ back $HOME`}, {"parent", ""},
			{"size", "53687091200"}, {"free", "0"}, {"file-offset", "0"}, {"nvme-tcp-server-port", "4420"},
			{"file-path", "/storage-pool/metal-csi/pvc-42f0d924-8c1e-4d67-9a1b-0123456789ab.img"},
			{"nvme-tcp-server-nqn", "nqn.2000-02.com.mikrotik:pvc-42f0d924-8c1e-4d67-9a1b-0123456789ab"},
			{"total-inodes", "1562806656"}, {"use", "8%"}}}},
	{wrapItem{head: " 7   ", props: []string{`name=pool/dir/.snapshots/snap-1.img`, `type=.img`,
		`file size=512.0MiB`, `last-modified=jan/02/2025 10:30:45`}},
		goldenItem{7, "", []kv{{"name", "pool/dir/.snapshots/snap-1.img"}, {"type", ".img"},
			{"file size", "512.0MiB"}, {"last-modified", "jan/02/2025 10:30:45"}}}},
}

// knownListings are the item sets the fuzz target re-wraps.
func knownListings(t testing.TB) []struct {
	header string
	items  []wrapItem
	want   []goldenItem
} {
	var out []struct {
		header string
		items  []wrapItem
		want   []goldenItem
	}
	for _, s := range goldenSamples {
		h, items := splitSample(t, readSample(t, s.file))
		out = append(out, struct {
			header string
			items  []wrapItem
			want   []goldenItem
		}{h, items, s.items})
	}
	var syn struct {
		header string
		items  []wrapItem
		want   []goldenItem
	}
	syn.header = "Flags: B - BLOCK-DEVICE; M - MOUNTED; t - NVME-TCP-EXPORT"
	for _, s := range syntheticItems {
		syn.items = append(syn.items, s.item)
		syn.want = append(syn.want, s.want)
	}
	return append(out, syn)
}

// FuzzParseDetailRewrap: however the known items are wrapped (within the model the parser
// documents), every item comes back and no key carries a wrong value.
func FuzzParseDetailRewrap(f *testing.F) {
	for seed := uint64(0); seed < 8; seed++ {
		f.Add(seed, uint8(seed*7))
	}
	listings := knownListings(f)
	f.Fuzz(func(t *testing.T, seed uint64, density uint8) {
		rng := rand.New(rand.NewPCG(seed, uint64(density)))
		for _, l := range listings {
			text := fuzzWrap(rng, l.header, l.items, int(density%40))
			got, err := ParseDetail(text)
			if err != nil {
				t.Fatalf("%v\n%s", err, text)
			}
			checkItems(t, "fuzz", got, l.want)
			for i := range got {
				if got[i].Comment != l.items[i].comment {
					t.Errorf("comment %q, want %q", got[i].Comment, l.items[i].comment)
				}
			}
			if t.Failed() {
				t.Fatalf("text:\n%s", text)
			}
		}
	})
}

func TestSyntheticItemsWrapped(t *testing.T) {
	var items []wrapItem
	var want []goldenItem
	for _, s := range syntheticItems {
		items, want = append(items, s.item), append(want, s.want)
	}
	for width := 40; width <= 200; width += 7 {
		got, err := ParseDetail(rewrap("Flags: B - BLOCK-DEVICE; M - MOUNTED; t - NVME-TCP-EXPORT", items, width))
		if err != nil {
			t.Fatal(err)
		}
		checkItems(t, "synthetic at width "+strconv.Itoa(width), got, want)
	}
}
