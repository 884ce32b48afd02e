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
	// where the end of text is, so that a line break is judged without rescanning the item
	inQuote, escaped bool
	wordStart        int  // offset of the word being read (after the last space outside quotes)
	wordEq           int  // offset of the first '=' of that word outside quotes, or -1
	quoted           bool // that word holds a complete quoted string
}

func (b *itemBuilder) appendLine(seg string) {
	if len(b.text) > 0 && b.joinSeparator(seg) {
		b.feed(" ")
	}
	b.feed(seg)
}

func (b *itemBuilder) feed(s string) {
	if len(b.text) == 0 {
		b.wordEq = -1
	}
	base := len(b.text)
	b.text = append(b.text, s...)
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case b.inQuote:
			switch {
			case b.escaped:
				b.escaped = false
			case c == '\\':
				b.escaped = true
			case c == '"':
				b.inQuote, b.quoted = false, true
			}
		case isSpace(c):
			b.wordStart, b.wordEq, b.quoted = base+i+1, -1, false
		case c == '"':
			b.inQuote = true
		case c == '=' && b.wordEq < 0:
			b.wordEq = base + i
		}
	}
}

// joinSeparator decides whether a line break after the logical text, continued by `next`,
// stood for a space:
//
//  1. A space kept at the end of the line or after the continuation indent is text: no
//     separator (RouterOS cuts a long value at the width without dropping a character).
//  2. Inside an open quote the value continues as is; after a complete quoted value the
//     break was between properties.
//  3. After `key=value`: a next line starting with `key=` is a new property; exactly three
//     digits after a value of at most three digits continue a space-grouped integer; a time
//     after a date continues a timestamp; anything else continues a value cut mid-token.
//  4. After a bare word (a later digit group or time, or a key cut by the width): a complete
//     three-digit group is followed by another group or a new property, a time by a new
//     property, `file` by `size=`; a cut key or group continues without a space.
//
// The ambiguity left: an unquoted value cut exactly before text shaped like `key=` reads as
// two properties (RouterOS does not print such values unquoted), and an ungrouped number
// cut before exactly three digits reads as grouped (harmless: group spaces are removed).
func (b *itemBuilder) joinSeparator(next string) bool {
	text := b.text
	switch {
	case next == "" || isSpace(next[0]) || isSpace(text[len(text)-1]) || b.inQuote:
		return false
	case b.quoted:
		return true
	}
	startsKey := keyLen(next) > 0
	if b.wordEq >= 0 {
		v := text[b.wordEq+1:]
		switch {
		case startsKey:
			return true
		case len(v) > 0 && len(v) <= 3 && allDigits(v):
			return startsToken(next, 3, allDigits[string])
		}
		return isDate(v) && startsToken(next, 8, isTime[string])
	}
	w := text[b.wordStart:]
	switch {
	case len(w) == 3 && allDigits(w):
		return startsKey || startsToken(next, 3, allDigits[string])
	case isTime(w):
		return startsKey
	}
	return string(w) == "file" && strings.HasPrefix(next, "size=")
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
		switch c := s[i]; {
		case c == '=':
			return i + 1
		case !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-'):
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

// startsToken: s begins with n bytes that are ok, followed by a space or its end.
func startsToken(s string, n int, ok func(string) bool) bool {
	return len(s) >= n && ok(s[:n]) && (len(s) == n || isSpace(s[n]))
}

// isDate matches the date half of both timestamp forms: 2025-11-11 and jan/02/2025.
func isDate[T string | []byte](s T) bool {
	switch {
	case len(s) == 10 && s[4] == '-' && s[7] == '-':
		return allDigits(s[:4]) && allDigits(s[5:7]) && allDigits(s[8:])
	case len(s) == 11 && s[3] == '/' && s[6] == '/':
		return firstBad(string(s[:3]), alnum[:26]) < 0 && allDigits(s[4:6]) && allDigits(s[7:])
	}
	return false
}

// isTime matches hh:mm:ss.
func isTime[T string | []byte](s T) bool {
	return len(s) == 8 && s[2] == ':' && s[5] == ':' && allDigits(s[:2]) && allDigits(s[3:5]) && allDigits(s[6:])
}

// build splits the item's logical text into properties. A value is a double-quoted string
// (escapes decoded) or an unquoted run that ends at the next word starting with `key=`
// (RouterOS prints spaces in unquoted values only in digit groups and `date time`). Words
// outside any property are ignored rather than glued to a value they may not belong to.
func (b *itemBuilder) build(scratch []prop) (Item, []prop) {
	it := Item{Index: b.index, Flags: b.flags, Comment: b.comment}
	s := string(b.text)
	props := scratch[:0]
	for i := 0; i < len(s); {
		switch kl := keyLen(s[i:]); {
		case isSpace(s[i]):
			i++
		case kl == 0:
			i = skipWord(s, i)
		default:
			v, end, ok := readValue(s, i+kl)
			if ok {
				props = append(props, prop{s[i : i+kl-1], v})
			}
			i = end
		}
	}
	// sized exactly: a listing of a thousand disks holds tens of thousands of values
	it.Props = make(map[string]string, len(props))
	it.Keys = make([]string, 0, len(props))
	for _, p := range props {
		if _, dup := it.Props[p.key]; !dup {
			it.Keys = append(it.Keys, p.key)
		}
		it.Props[p.key] = p.value
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
		if end < len(s) && !isSpace(s[end]) {
			// text glued to the closing quote: not something RouterOS prints
			return "", skipWord(s, end), false
		}
		return v, end, true
	}
	end = i
	for end < len(s) && !isSpace(s[end]) {
		end++
	}
	if end == i {
		return "", end, true // `key=` with nothing after it: an empty value
	}
	// further words belong to this value until one starts a property
	for {
		rest := strings.TrimLeft(s[end:], " \t")
		if rest == "" || rest[0] == '"' || keyLen(rest) > 0 {
			break
		}
		end = skipWord(s, len(s)-len(rest))
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
		case isSpace(c) && !inQuote:
			return i
		}
	}
	return len(s)
}

// ungroup joins a space-grouped integer ("53 687 091 200" → "53687091200"); any other
// value is returned as is.
func ungroup(v string) string {
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
