package sim

import (
	"fmt"
	"strconv"
	"strings"
)

// propStyle is how RouterOS prints a property's value in `print detail`.
type propStyle int

const (
	styleBare    propStyle = iota // file-path=/raid10/x.img, fs=-, nvme-tcp-export=yes
	styleQuoted                   // slot="x", model="/raid10/x.img"
	styleGrouped                  // size=1 099 511 627 776
)

type prop struct {
	key   string
	raw   string // what `where` compares against
	style propStyle
}

func (p prop) String() string {
	switch p.style {
	case styleQuoted:
		return p.key + "=" + quote(p.raw)
	case styleGrouped:
		return p.key + "=" + groupDigits(p.raw)
	}
	return p.key + "=" + p.raw
}

// item is one printable menu entry.
type item struct {
	index   int
	flags   string // the letters set on this item
	comment string
	props   []prop
	ref     string // what commands act on: a disk's internal id or a file's path
}

func (it *item) get(key string) (string, bool) {
	for _, p := range it.props {
		if p.key == key {
			return p.raw, true
		}
	}
	return "", false
}

type flagDef struct {
	letter byte
	name   string
}

// diskFlags are the /disk flags our items can carry, in the order RouterOS prints them.
var diskFlags = []flagDef{{'B', "BLOCK-DEVICE"}, {'M', "MOUNTED"}, {'t', "NVME-TCP-EXPORT"}}

// detailPrinter renders `print detail` the way RouterOS 7 does on a console of a given width:
//
//   - a `Flags:` legend naming only the flags set on some printed item (all of the menu's
//     flags when nothing matched; no legend for a menu without flags);
//   - each item starts with its index, right-aligned to the widest printed index (at least
//     two columns), a space, one column per flag present in the listing (fixed order, blank
//     where unset, at least one column), and a space: `31 Bt ` alone, `26 BM  ` in a listing
//     that also shows an exported disk;
//   - properties separated by single spaces, wrapped onto lines indented to the first
//     property's column; a property that does not fit on a fresh line is broken inside its
//     value, preferably just before a '-' (the hardware split a file-path as `…/pvc-xxx` +
//     newline + `-yyy.img`);
//   - a blank line between items, a `;;; comment` after the flags on an item's first line.
//
// width <= 0 never wraps. The reference samples are reproduced at every width from 230 to
// 240 (disks) and 77 to 80 (files); see golden_test.go.
type detailPrinter struct {
	flags []flagDef // the menu's flags; nil for menus without flags (/file)
	width int
}

func (pr detailPrinter) print(items []*item) string {
	var b strings.Builder
	var present []flagDef
	for _, f := range pr.flags {
		for _, it := range items {
			if strings.IndexByte(it.flags, f.letter) >= 0 {
				present = append(present, f)
				break
			}
		}
	}
	legend := present
	if len(items) == 0 {
		legend = pr.flags
	}
	if len(legend) > 0 {
		b.WriteString("Flags: ")
		for i, f := range legend {
			if i > 0 {
				b.WriteString("; ")
			}
			fmt.Fprintf(&b, "%c - %s", f.letter, f.name)
		}
		b.WriteByte('\n')
	}
	idxWidth := 2
	for _, it := range items {
		idxWidth = max(idxWidth, len(strconv.Itoa(it.index)))
	}
	for n, it := range items {
		if n > 0 {
			b.WriteByte('\n')
		}
		cols := make([]byte, max(1, len(present)))
		for i := range cols {
			cols[i] = ' '
		}
		for i, f := range present {
			if strings.IndexByte(it.flags, f.letter) >= 0 {
				cols[i] = f.letter
			}
		}
		prefix := fmt.Sprintf("%*d %s ", idxWidth, it.index, cols)
		pr.writeProps(&b, prefix, it)
	}
	return b.String()
}

func (pr detailPrinter) writeProps(b *strings.Builder, prefix string, it *item) {
	indent := strings.Repeat(" ", len(prefix))
	line := []byte(prefix)
	if it.comment != "" {
		b.Write(line)
		b.WriteString(";;; " + it.comment + "\n")
		line = []byte(indent)
	}
	onLine := false // a property already sits on the current line
	flush := func() {
		b.Write(line)
		b.WriteByte('\n')
		line = append(line[:0], indent...)
		onLine = false
	}
	for _, p := range it.props {
		tok := p.String()
		if pr.width <= 0 || len(line)+1+len(tok) <= pr.width && onLine {
			if onLine {
				line = append(line, ' ')
			}
			line = append(line, tok...)
			onLine = true
			continue
		}
		if onLine {
			flush()
		}
		keyLen := len(p.key) + 1
		for len(line)+len(tok) > pr.width {
			cut := breakPoint(tok, pr.width-len(line), keyLen)
			line = append(line, tok[:cut]...)
			flush()
			tok, keyLen = tok[cut:], 0
		}
		line = append(line, tok...)
		onLine = true
	}
	if onLine || len(it.props) == 0 {
		flush()
	}
}

// breakPoint picks where to cut a property that is wider than the avail columns left on
// its line: just before the last '-' that fits (keeping at least one value character after
// the key), or hard at the edge when there is none.
func breakPoint(tok string, avail, keyLen int) int {
	for p := min(avail, len(tok)-1); p > keyLen; p-- {
		if tok[p] == '-' {
			return p
		}
	}
	// A hard break never lands next to a space (inside a grouped number or a quoted
	// string): a continuation must not start with, or a line end in, a space.
	p := max(avail, 1)
	for p > 1 && (tok[p] == ' ' || tok[p-1] == ' ') {
		p--
	}
	return p
}

// groupDigits writes an integer the RouterOS way: 1099511627776 → 1 099 511 627 776.
func groupDigits(s string) string {
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	if neg {
		b.WriteByte('-')
	}
	for i := range len(s) {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(' ')
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// humanSize prints a byte count the way RouterOS prints file-size and /file sizes: one
// decimal in the binary unit that keeps the number under 10 240. That rule gives the
// hardware's `1024.0GiB` for 1 TiB and `10.0GiB`/`50.0GiB` for 10 and 50 GiB (and RouterOS's
// familiar `1024.0MiB` for 1 GiB of memory). Under 10 240 bytes the plain number is printed.
func humanSize(n int64) string {
	units := []string{"", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"}
	v, u := float64(n), 0
	for v >= 10240 && u < len(units)-1 {
		v /= 1024
		u++
	}
	if u == 0 {
		return strconv.FormatInt(n, 10)
	}
	return strconv.FormatFloat(v, 'f', 1, 64) + units[u]
}
