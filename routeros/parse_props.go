package routeros

import "strings"

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

// build splits the item's logical text into properties.
//
// A value is either a double-quoted string (escapes decoded) or an unquoted run that ends
// at the next word starting with `key=`: unquoted values hold spaces only where RouterOS
// prints them (digit groups, `date time`), and a word that is not a key cannot start a
// property. Words outside any property (before the first key, or after a quoted value)
// are ignored rather than glued to a value they may not belong to.
func (b *itemBuilder) build(scratch []prop) (Item, []prop) {
	it := Item{Index: b.index, Flags: b.flags, Comment: b.comment}
	s := string(b.text)
	props := scratch[:0]
	for i := 0; i < len(s); {
		if s[i] == ' ' || s[i] == '\t' {
			i++
			continue
		}
		kl := keyLen(s[i:])
		if kl == 0 {
			i = skipWord(s, i)
			continue
		}
		key := s[i : i+kl-1]
		v, end, ok := readValue(s, i+kl)
		i = end
		if ok {
			props = append(props, prop{key, v})
		}
	}
	// sized exactly: a listing of a thousand disks holds tens of thousands of values
	it.Props = make(map[string]string, len(props))
	it.Keys = make([]string, 0, len(props))
	for _, p := range props {
		n := len(it.Props)
		it.Props[p.key] = p.value
		if len(it.Props) > n {
			it.Keys = append(it.Keys, p.key)
		}
	}
	return it, props
}

type prop struct{ key, value string }

// readValue reads the value starting at s[i]; ok is false for a quoted value without its
// closing quote (cut off: reporting part of it would be reporting a wrong value).
func readValue(s string, i int) (v string, end int, ok bool) {
	if i < len(s) && s[i] == '"' {
		j, escaped := i+1, false
		for ; j < len(s); j++ {
			if s[j] == '\\' {
				j++
				escaped = true
				continue
			}
			if s[j] == '"' {
				break
			}
		}
		if j >= len(s) {
			return "", len(s), false
		}
		v = s[i+1 : j]
		if escaped {
			v = unescape(v)
		}
		end = j + 1
		if end < len(s) && s[end] != ' ' && s[end] != '\t' {
			// text glued to the closing quote: not something RouterOS prints
			return "", skipWord(s, end), false
		}
		return v, end, true
	}
	end = i
	for end < len(s) && s[end] != ' ' && s[end] != '\t' {
		end++
	}
	if end == i {
		return "", end, true // `key=` with nothing after it: an empty value
	}
	// further words belong to this value until one starts a property
	for {
		j := end
		for j < len(s) && (s[j] == ' ' || s[j] == '\t') {
			j++
		}
		if j == len(s) || s[j] == '"' || keyLen(s[j:]) > 0 {
			break
		}
		end = skipWord(s, j)
	}
	return ungroup(s[i:end]), end, true
}

// skipWord returns the offset after the word at s[i] (quoted parts included).
func skipWord(s string, i int) int {
	inQuote := false
	for ; i < len(s); i++ {
		switch c := s[i]; {
		case c == '\\' && inQuote:
			i++
		case c == '"':
			inQuote = !inQuote
		case (c == ' ' || c == '\t') && !inQuote:
			return i
		}
	}
	return len(s)
}

// ungroup joins a space-grouped integer ("53 687 091 200" → "53687091200"); any other
// value is returned as is.
func ungroup(v string) string {
	if strings.IndexByte(v, ' ') < 0 {
		return v
	}
	first := strings.IndexByte(v, ' ')
	if first < 1 || first > 3 || !allDigits(v[:first]) || (len(v)-first)%4 != 0 {
		return v
	}
	for i := first; i < len(v); i += 4 {
		if v[i] != ' ' || !allDigits(v[i+1:i+4]) {
			return v
		}
	}
	return strings.ReplaceAll(v, " ", "")
}
