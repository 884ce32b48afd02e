package routeros

import "testing"

func TestPrintedSizeMatches(t *testing.T) {
	cases := []struct {
		printed string
		exact   int64
		want    bool
	}{
		{"10.0GiB", 10 * gib, true},
		{"10.0GiB", 10*gib - 50*mib, true},  // a copy this close looks complete: other evidence is needed
		{"10.0GiB", 10*gib + 100*mib, true}, // within one unit of the last digit (truncating RouterOS)
		{"10.0GiB", 10*gib - 200*mib, false},
		{"9.8GiB", 10 * gib, false},
		{"8192.0KiB", 8 * mib, true},
		{"8191.0KiB", 8 * mib, false},
		{"1024.0GiB", tib, true},
		{"1023.8GiB", tib, false},
		{"20.0MiB", 20 * mib, true},
		{"19.9MiB", 20 * mib, true}, // exactly one last-digit unit away: still possible when rounding up
		{"19.8MiB", 20 * mib, false},
		{"1536", 1536, true}, // plain bytes: exact to the byte
		{"1536", 1538, false},
		{"0", 0, true},
		{"", 0, false},
		{"lots", 1, false},
		{"10.0GiB", -1, false},
		{"12XB", 12, false},
	}
	for _, c := range cases {
		if got := PrintedSizeMatches(c.printed, c.exact); got != c.want {
			t.Errorf("PrintedSizeMatches(%q, %d) = %v, want %v", c.printed, c.exact, got, c.want)
		}
	}
}

func TestValidateComment(t *testing.T) {
	for _, ok := range []string{"", "rds-csi: copy of snapshot snap-1", "a=b/c_d.e"} {
		if err := ValidateComment(ok); err != nil {
			t.Errorf("ValidateComment(%q): %v", ok, err)
		}
	}
	long := make([]byte, maxCommentLen+1)
	for i := range long {
		long[i] = 'a'
	}
	for _, bad := range []string{`a"b`, "a$b", "a[b]", "a;b", "a\nb", `a\b`, "é", string(long)} {
		if err := ValidateComment(bad); err == nil {
			t.Errorf("ValidateComment(%q) accepted it", bad)
		}
	}
}
