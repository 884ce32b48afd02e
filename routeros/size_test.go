package routeros

import "testing"

func TestFormatSize(t *testing.T) {
	cases := []struct {
		bytes int64
		want  string
	}{
		{1, "1M"},
		{0, "0M"},
		{-5, "0M"},
		{mib - 1, "1M"},
		{mib, "1M"},
		{mib + 1, "2M"},
		{3 * gib / 2, "1536M"}, // never "1G": that once gave a user less than asked
		{gib, "1G"},
		{2 * gib, "2G"},
		{2*gib + 1, "2049M"},
		{10*gib + 512*mib, "10752M"},
		{tib, "1T"},
		{tib + gib, "1025G"},
		{5 * tib, "5T"},
		{MaxDiskSize, "1024T"},
		{MaxDiskSize + 1, "1024T"},
	}
	for _, c := range cases {
		if got := FormatSize(c.bytes); got != c.want {
			t.Errorf("FormatSize(%d) = %q, want %q", c.bytes, got, c.want)
		}
	}
}

func TestRoundUpMiB(t *testing.T) {
	cases := []struct{ in, want int64 }{
		{-1, 0}, {0, 0}, {1, mib}, {mib, mib}, {mib + 1, 2 * mib}, {3 * gib / 2, 3 * gib / 2},
		{1<<62 + 3, MaxDiskSize},
	}
	for _, c := range cases {
		if got := RoundUpMiB(c.in); got != c.want {
			t.Errorf("RoundUpMiB(%d) = %d, want %d", c.in, got, c.want)
		}
		if c.in > 0 && c.in <= MaxDiskSize && RoundUpMiB(c.in) < c.in {
			t.Errorf("RoundUpMiB(%d) gives less than asked", c.in)
		}
	}
}

func TestParseHumanSize(t *testing.T) {
	cases := []struct {
		in   string
		want int64
		ok   bool
	}{
		{"10.0GiB", 10 * gib, true},
		{"1024.0GiB", tib, true},
		{"50.0GiB", 50 * gib, true},
		{"512.0MiB", 512 * mib, true},
		{"1.5KiB", 1536, true},
		{"20B", 20, true},
		{"1 099 511 627 776", tib, true},
		{"4096", 4096, true},
		{"2G", 2 * gib, true},
		{"", 0, false},
		{"GiB", 0, false},
		{"10.0XiB", 0, false},
		{"1e30GiB", 0, false},
	}
	for _, c := range cases {
		got, err := parseHumanSize(c.in)
		if (err == nil) != c.ok || got != c.want {
			t.Errorf("parseHumanSize(%q) = %d, %v; want %d, ok=%v", c.in, got, err, c.want, c.ok)
		}
	}
}
