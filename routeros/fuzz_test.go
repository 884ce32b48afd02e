package routeros

import "testing"

// FuzzParseDetail feeds arbitrary text: the parser never panics, and what it reports is
// self-consistent (every key non-empty and well-formed, Keys and Props agree).
// Its seeds are the reference samples (testdata/*.txt) plus the corpus in testdata/fuzz.
func FuzzParseDetail(f *testing.F) {
	for _, s := range goldenSamples {
		f.Add(readSample(f, s.file))
	}
	f.Add("Flags: X - DISABLED\n;;; c\n 0 X  a=\"\\\" b=1 2\n   3 c=\n")
	f.Fuzz(func(t *testing.T, text string) {
		items, err := ParseDetail(text)
		if err != nil {
			return
		}
		for _, it := range items {
			if len(it.Keys) != len(it.Props) {
				t.Fatalf("keys %q vs props %v", it.Keys, it.Props)
			}
			for _, k := range it.Keys {
				if _, ok := it.Props[k]; !ok || keyLen(k+"=") != len(k)+1 {
					t.Fatalf("bad key %q in %+v", k, it)
				}
			}
		}
		// ParseFiles must not panic on the same input either
		_, _ = ParseFiles(text)
	})
}

// FuzzQuote: quote's output is one double-quoted token RouterOS reads back as the input:
// no unescaped `"` or `$` inside, no raw control, newline or non-ASCII byte, so `[ ]` and
// `;` can only be inert text inside the quotes.
func FuzzQuote(f *testing.F) {
	for _, s := range []string{"", "pvc-1", `a"b`, `\`, "$x", "[find]", "a;b", "a\nb", "\x00\x7f\xff", "?", "é", `\a\0A`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		q := quote(s)
		if len(q) < 2 || q[0] != '"' || q[len(q)-1] != '"' {
			t.Fatalf("quote(%q) = %q: not one quoted token", s, q)
		}
		inner := q[1 : len(q)-1]
		for i := 0; i < len(inner); i++ {
			c := inner[i]
			if c < 0x20 || c >= 0x7f {
				t.Fatalf("quote(%q) = %q: raw byte %#x", s, q, c)
			}
			switch c {
			case '\\':
				i++ // the escaped character, or the first of two hex digits
				if i >= len(inner) {
					t.Fatalf("quote(%q) = %q: dangling backslash", s, q)
				}
				if isHexDigit(inner[i]) {
					i++
				}
			case '"', '$':
				t.Fatalf("quote(%q) = %q: unescaped %q at %d", s, q, c, i)
			}
		}
		if got := unescape(inner); got != s {
			t.Fatalf("unescape(quote(%q)) = %q", s, got)
		}
		// the parser reads it back as the same value
		items, err := ParseDetail("0   k=" + q + "\n")
		if err != nil || len(items) != 1 || items[0].Props["k"] != s {
			t.Fatalf("parsed back as %+v, %v", items, err)
		}
	})
}

func isHexDigit(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}
