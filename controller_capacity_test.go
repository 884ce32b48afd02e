package main

import (
	"slices"
	"testing"
)

func TestOnePathPerPool(t *testing.T) {
	for _, tc := range []struct{ in, want []string }{
		{nil, nil},
		{[]string{"/pool/a"}, []string{"/pool/a"}},
		{[]string{"/pool/a", "/pool/b/c", "/other/x", "/pool"}, []string{"/pool/a", "/other/x"}},
		{[]string{"/pool-2/a", "/pool/a"}, []string{"/pool-2/a", "/pool/a"}}, // whole components, not prefixes
	} {
		if got := onePathPerPool(tc.in); !slices.Equal(got, tc.want) {
			t.Errorf("onePathPerPool(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
