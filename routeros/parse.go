package routeros

import (
	"fmt"
	"strconv"
	"strings"
)

// Item is one entry of a RouterOS `print detail` listing.
type Item struct {
	Index   int    // the listing's row number; not stable between calls, never an identity
	Flags   string // the flag letters set on the item, e.g. "Bt" (blank columns dropped)
	Comment string // text of the `;;; …` comment, if any
	// Props maps each key to its value as RouterOS means it: quotes removed and escapes
	// decoded, and space-grouped integers ("1 099 511 627 776") joined ("1099511627776").
	Props map[string]string
	Keys  []string // Props' keys in the order RouterOS printed them
}

// ParseDetail parses the output of a `print detail` command (any menu, including `/file`),
// in every form routeros-rds.md documents: an optional `Flags:` legend, `;;; comment` lines,
// an index and flags column, continuation lines indented to the property column, lines broken
// between properties and inside values, CRLF, quoted and unquoted values, space-grouped
// integers and the `file size=` key. An empty text or a legend alone is an empty listing.
//
// A continuation line that starts with `key=` begins a new property; any other continues the
// previous value (joinSeparator states the exact rules and the one ambiguity left). Text at a
// break is never lost or invented, except a consumed space, restored only where RouterOS
// puts spaces inside unquoted values.
func ParseDetail(text string) ([]Item, error) {
	p := detailParser{items: make([]Item, 0, 1+strings.Count(text, "\n")/3)}
	lineNo := 0
	for line := range strings.Lines(text) {
		lineNo++
		if err := p.line(strings.TrimRight(line, "\r\n"), lineNo); err != nil {
			return nil, err
		}
	}
	p.finish()
	return p.items, nil
}

// detailParser holds the state between lines of one listing.
type detailParser struct {
	items       []Item
	cur         *itemBuilder
	seenItem    bool
	header      bool   // a `Flags:`/`Columns:` legend was read (its wrapped tail may follow)
	legendFlags int    // how many flags the legend names: the width of the flags column
	blank       bool   // the previous line was blank: the next index line surely starts an item
	pending     string // a `;;;` comment printed above the next item
	commentOpen bool   // the previous line was such a comment: plain text continues it
	text        []byte // scratch for the logical text of an item, reused between items
	props       []prop // scratch for an item's properties, reused between items
}

func (p *detailParser) line(line string, lineNo int) error {
	indent := len(line) - len(strings.TrimLeft(line, " \t"))
	if indent == len(line) {
		p.blank, p.commentOpen = true, false
		return nil
	}
	body := line[indent:]
	blank := p.blank
	p.blank = false

	// A number starts a new item only left of the property column: a continuation line
	// can start with digits too (`size=1 099` + newline + `511 627 776`).
	if p.cur == nil || blank || indent < p.cur.propCol {
		if b, ok := p.indexLine(line, indent); ok {
			p.finish()
			b.comment = joinWords(p.pending, b.comment)
			p.pending, p.commentOpen, p.seenItem = "", false, true
			p.cur = b
			return nil
		}
	}
	if strings.HasPrefix(body, ";;;") && (p.cur == nil || !p.cur.inQuote) {
		c := strings.TrimSpace(body[3:])
		if p.cur != nil && len(p.cur.text) == 0 {
			p.cur.comment = joinWords(p.cur.comment, c)
			p.cur.commentOnLine = true
			return nil
		}
		p.finish()
		p.pending, p.commentOpen = joinWords(p.pending, c), true
		return nil
	}
	if p.cur == nil {
		switch {
		case p.commentOpen:
			p.pending = joinWords(p.pending, strings.TrimSpace(body))
		case !p.seenItem && (p.header || strings.HasPrefix(body, "Flags:") || strings.HasPrefix(body, "Columns:")):
			p.header = true // a wrapped legend continues on the next lines
			p.legendFlags += strings.Count(body, " - ")
		default:
			return fmt.Errorf("line %d: unexpected text %q where a `print detail` item should start", lineNo, clip(line, 60))
		}
		return nil
	}
	b := p.cur
	if b.propCol < 0 {
		b.propCol = indent
	}
	if len(b.text) == 0 && b.commentOnLine && keyLen(body) == 0 {
		b.comment = joinWords(b.comment, strings.TrimSpace(body))
		return nil
	}
	b.appendLine(line[min(indent, b.propCol):])
	return nil
}

// indexLine recognises the first line of an item: a right-aligned index, the flags column,
// then the first property or a `;;;` comment.
func (p *detailParser) indexLine(line string, indent int) (*itemBuilder, bool) {
	i := indent
	for i < len(line) && line[i] >= '0' && line[i] <= '9' {
		i++
	}
	if i == indent || i-indent > 9 || (i < len(line) && !isSpace(line[i])) {
		return nil, false
	}
	index, _ := strconv.Atoi(line[indent:i])
	b := &itemBuilder{index: index, propCol: -1, text: p.text[:0]}
	var flags []byte
	for j := i; j < len(line); {
		c := line[j]
		switch {
		case isSpace(c):
			j++
			continue
		case strings.HasPrefix(line[j:], ";;;"):
			b.propCol = j
			b.comment = strings.TrimSpace(line[j+3:])
			b.commentOnLine = true
		case keyLen(line[j:]) > 0:
			b.propCol = j
			b.appendLine(line[j:])
		default:
			// a run of flag letters, or (only when the first key was cut by the line end)
			// the start of the first property
			k := j
			for k < len(line) && isFlagChar(line[k]) {
				k++
			}
			if k < len(line) && !isSpace(line[k]) || len(flags)+k-j > p.maxFlags() {
				if len(flags) == 0 && j-i > 6 {
					return nil, false // text far right of a number: not an index line
				}
				b.propCol = j
				b.appendLine(line[j:])
				break
			}
			flags = append(flags, line[j:k]...)
			j = k
			continue
		}
		break
	}
	b.flags = string(flags)
	return b, true
}

// maxFlags bounds the flags column: the legend's count when there is one, else the
// widest set seen on a disk (B, M, t and a spare).
func (p *detailParser) maxFlags() int {
	if p.legendFlags > 0 {
		return p.legendFlags
	}
	return 4
}

func isFlagChar(c byte) bool {
	return c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c == '*'
}

func (p *detailParser) finish() {
	if p.cur == nil {
		return
	}
	var it Item
	it, p.props = p.cur.build(p.props)
	p.items = append(p.items, it)
	p.text = p.cur.text[:0] // the item's text was copied: reuse the buffer
	p.cur = nil
}

func joinWords(a, b string) string {
	if a == "" || b == "" {
		return a + b
	}
	return a + " " + b
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' }

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
