package routeros

import "strings"

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
