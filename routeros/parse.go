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

// Get returns the value of key and whether the item has it.
func (it *Item) Get(key string) (string, bool) {
	v, ok := it.Props[key]
	return v, ok
}

// ParseDetail parses the output of a `print detail` command (any menu, including
// `/file print detail`). It accepts every form documented in routeros-rds.md: an optional
// `Flags:` legend, `;;; comment` lines, an index and flags column, continuation lines
// indented to the property column, lines broken between properties and inside values,
// CRLF line ends, quoted and unquoted values, space-grouped integers and the `file size=`
// key. An empty text or a legend alone is an empty listing, not an error.
//
// How a line break is read back (see joinSeparator for the exact rules): a continuation
// line that starts with `key=` begins a new property; any other continuation line
// continues the previous value. Text at a break is never lost or invented except at a
// consumed space, which is restored only where RouterOS puts spaces inside unquoted values
// (digit groups of exactly three after a number, a time after a date, `file` before
// `size=`). A space inside a quoted value must survive the break (at the end of the line or
// after the continuation indent), as it does when a long value is cut at the terminal width.
func ParseDetail(text string) ([]Item, error) {
	p := detailParser{items: make([]Item, 0, 1+strings.Count(text, "\n")/3)}
	lineNo := 0
	for len(text) > 0 {
		var line string
		if i := strings.IndexByte(text, '\n'); i >= 0 {
			line, text = text[:i], text[i+1:]
		} else {
			line, text = text, ""
		}
		lineNo++
		if err := p.line(strings.TrimRight(line, "\r"), lineNo); err != nil {
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
	indent := 0
	for indent < len(line) && (line[indent] == ' ' || line[indent] == '\t') {
		indent++
	}
	if indent == len(line) {
		p.blank, p.commentOpen = true, false
		return nil
	}
	body := line[indent:]
	blank := p.blank
	p.blank = false

	// A line that starts with a number is a new item only where an index can be: in the
	// first column(s), left of the property column. A continuation line can start with
	// digits too (`size=1 099` + newline + `511 627 776`), but it is indented to the
	// property column.
	if p.cur == nil || blank || indent < p.cur.propCol {
		if b, ok := p.indexLine(line, indent); ok {
			p.finish()
			b.comment = joinWords(p.pending, b.comment)
			p.pending, p.commentOpen, p.seenItem = "", false, true
			p.cur = b
			return nil
		}
	}
	if strings.HasPrefix(body, ";;;") && (p.cur == nil || !p.cur.st.inQuote) {
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
		case !p.seenItem && (strings.HasPrefix(body, "Flags:") || strings.HasPrefix(body, "Columns:")):
			p.header = true
			p.legendFlags += strings.Count(body, " - ")
		case !p.seenItem && p.header:
			// the legend wrapped onto another line
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
	if i == indent || i-indent > 9 || (i < len(line) && line[i] != ' ' && line[i] != '\t') {
		return nil, false
	}
	index, _ := strconv.Atoi(line[indent:i])
	b := &itemBuilder{index: index, propCol: -1, text: p.text[:0]}
	var flags []byte
	for j := i; j < len(line); {
		c := line[j]
		switch {
		case c == ' ' || c == '\t':
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
			if k < len(line) && line[k] != ' ' && line[k] != '\t' || len(flags)+k-j > p.maxFlags() {
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

// itemBuilder collects the logical (unwrapped) property text of one item.
type itemBuilder struct {
	index         int
	flags         string
	comment       string
	commentOnLine bool // the index line carried the comment; plain text after it extends it
	propCol       int  // column where properties start; -1 until known
	text          []byte
	st            lexState
}

// lexState tracks where the end of the logical text is, so that a line break can be
// judged without rescanning the item.
type lexState struct {
	inQuote   bool
	escaped   bool
	wordStart int  // offset of the word being read (after the last space outside quotes)
	wordEq    int  // offset of the first '=' of that word outside quotes, or -1
	quoted    bool // that word holds a complete quoted string
}

func (b *itemBuilder) appendLine(seg string) {
	if len(b.text) > 0 && joinSeparator(b.text, &b.st, seg) {
		b.feed(" ")
	}
	b.feed(seg)
}

func (b *itemBuilder) feed(s string) {
	st := &b.st
	if len(b.text) == 0 {
		st.wordEq = -1
	}
	base := len(b.text)
	b.text = append(b.text, s...)
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case st.inQuote:
			switch {
			case st.escaped:
				st.escaped = false
			case c == '\\':
				st.escaped = true
			case c == '"':
				st.inQuote, st.quoted = false, true
			}
		case c == ' ' || c == '\t':
			st.wordStart, st.wordEq, st.quoted = base+i+1, -1, false
		case c == '"':
			st.inQuote = true
		case c == '=' && st.wordEq < 0:
			st.wordEq = base + i
		}
	}
}

// joinSeparator decides whether a line break that ended the logical text `text` (whose
// end state is st) and continues with `next` stood for a space. The rules, in order:
//
//  1. A space kept at the end of the line or after the continuation indent is text: no
//     separator is added (RouterOS cuts a long value at the width without dropping any
//     character).
//  2. Inside an open quote the value continues as is (a cut inside a quoted value).
//  3. After a complete quoted value the break was between properties.
//  4. After `key=value`: a next line starting with `key=` is a new property; digits in a
//     group of exactly three after a value of at most three digits continue a space-grouped
//     integer; a time after a date continues a timestamp; anything else continues a value
//     cut mid-token.
//  5. After a bare word (a value's later digit group or time, or a key cut by the width):
//     a complete three-digit group is followed by another group or a new property, a time
//     by a new property, `file` by `size=`; a cut key or group continues without a space.
//
// Ambiguity, and the choice made: an unquoted value cut exactly before text shaped like
// `key=` reads as two properties (RouterOS does not print such values unquoted), and an
// ungrouped number cut before exactly three digits reads as a grouped one (harmless:
// group spaces are removed from values).
func joinSeparator(text []byte, st *lexState, next string) bool {
	if next == "" || next[0] == ' ' || next[0] == '\t' || text[len(text)-1] == ' ' || text[len(text)-1] == '\t' {
		return false
	}
	if st.inQuote {
		return false
	}
	if st.quoted {
		return true
	}
	startsKey := keyLen(next) > 0
	if st.wordEq >= 0 {
		if startsKey {
			return true
		}
		v := text[st.wordEq+1:]
		switch {
		case len(v) > 0 && len(v) <= 3 && allDigits(v):
			return startsGroup(next)
		case isDate(v):
			return startsTime(next)
		}
		return false
	}
	w := text[st.wordStart:]
	switch {
	case len(w) == 3 && allDigits(w):
		return startsKey || startsGroup(next)
	case isTime(w):
		return startsKey
	case string(w) == "file":
		return strings.HasPrefix(next, "size=")
	}
	return false
}

// keyLen returns the length of the `key=` (including '=') that s starts with, or 0.
// Keys are whole words of lower-case letters, digits and '-', starting with a letter; the
// one key RouterOS prints with a space, `file size=`, is recognised as such.
func keyLen(s string) int {
	if strings.HasPrefix(s, "file size=") {
		return len("file size=")
	}
	if len(s) == 0 || s[0] < 'a' || s[0] > 'z' {
		return 0
	}
	for i := 1; i < len(s) && i <= 64; i++ {
		c := s[i]
		switch {
		case c == '=':
			return i + 1
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-':
		default:
			return 0
		}
	}
	return 0
}

func allDigits[T string | []byte](s T) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return len(s) > 0
}

// startsGroup: s begins with exactly three digits followed by a space or its end.
func startsGroup(s string) bool {
	return len(s) >= 3 && allDigits(s[:3]) && (len(s) == 3 || s[3] == ' ' || s[3] == '\t')
}

// isDate matches the date half of both timestamp forms: 2025-11-11 and jan/02/2025.
func isDate[T string | []byte](s T) bool {
	switch {
	case len(s) == 10 && s[4] == '-' && s[7] == '-':
		return allDigits(s[:4]) && allDigits(s[5:7]) && allDigits(s[8:])
	case len(s) == 11 && s[3] == '/' && s[6] == '/':
		return isLower(s[0]) && isLower(s[1]) && isLower(s[2]) && allDigits(s[4:6]) && allDigits(s[7:])
	}
	return false
}

func isLower(c byte) bool { return c >= 'a' && c <= 'z' }

// isTime matches hh:mm:ss.
func isTime[T string | []byte](s T) bool {
	return len(s) == 8 && s[2] == ':' && s[5] == ':' && allDigits(s[:2]) && allDigits(s[3:5]) && allDigits(s[6:])
}

// startsTime: s begins with hh:mm:ss followed by a space or its end.
func startsTime(s string) bool {
	return len(s) >= 8 && isTime(s[:8]) && (len(s) == 8 || s[8] == ' ' || s[8] == '\t')
}

func joinWords(a, b string) string {
	switch {
	case a == "":
		return b
	case b == "":
		return a
	}
	return a + " " + b
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
