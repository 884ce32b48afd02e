package routeros

import "strings"

const hexDigits = "0123456789ABCDEF"

// quote renders s as a RouterOS double-quoted string. Inside the quotes `"`, `\`, `$` and
// `?` are backslash-escaped (`$` would start a variable, `?` asks the console for help) and
// every byte outside printable ASCII becomes `\HH`, so the result is one line of printable
// ASCII in which `[ ]`, `;` and newlines can only appear as inert text inside the quotes.
// The hex digits of a control byte start with 0, 1 or 7, so `\HH` never reads as one of
// the letter escapes (`\a`, `\b`, `\f`, …).
func quote(s string) string {
	var b strings.Builder
	b.Grow(len(s) + 2)
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\' || c == '$' || c == '?':
			b.WriteByte('\\')
			b.WriteByte(c)
		case c < 0x20 || c >= 0x7f:
			b.WriteByte('\\')
			b.WriteByte(hexDigits[c>>4])
			b.WriteByte(hexDigits[c&0xf])
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// unescape decodes the escapes RouterOS prints inside a quoted value (the text between the
// quotes). The letter escapes are tried first, as RouterOS does; an unknown escape stands
// for the character itself.
func unescape(s string) string {
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '\\' || i+1 == len(s) {
			b.WriteByte(c)
			continue
		}
		i++
		switch e := s[i]; e {
		case '_':
			b.WriteByte(' ')
		case 'a':
			b.WriteByte('\a')
		case 'b':
			b.WriteByte('\b')
		case 'f':
			b.WriteByte('\f')
		case 'n':
			b.WriteByte('\n')
		case 'r':
			b.WriteByte('\r')
		case 't':
			b.WriteByte('\t')
		case 'v':
			b.WriteByte('\v')
		default:
			if i+1 < len(s) && isHexDigit(e) && isHexDigit(s[i+1]) {
				b.WriteByte(hexValue(e)<<4 | hexValue(s[i+1]))
				i++
				continue
			}
			b.WriteByte(e)
		}
	}
	return b.String()
}

func isHexDigit(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

func hexValue(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c >= 'a':
		return c - 'a' + 10
	}
	return c - 'A' + 10
}
