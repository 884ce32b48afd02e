package main

import (
	"strings"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
)

func contains(s, part string) bool { return strings.Contains(s, part) }

func TestControllerVolumeSize(t *testing.T) {
	const mib, gib = int64(1) << 20, int64(1) << 30
	tests := []struct {
		name            string
		required, limit int64
		minimum         int64
		want            int64
		code            codes.Code
	}{
		{"nothing asked: 1 GiB", 0, 0, 0, gib, codes.OK},
		{"1.5 GiB exactly", 3 * gib / 2, 0, 0, 1536 * mib, codes.OK},
		{"one byte: a MiB", 1, 0, 0, mib, codes.OK},
		{"limit only, below the default", 0, 10 * mib, 0, 10 * mib, codes.OK},
		{"limit only, above the default", 0, 10 * gib, 0, gib, codes.OK},
		{"xfs minimum raises a small request", 10 * mib, 0, xfsMinimumSize, 300 * mib, codes.OK},
		{"xfs minimum beyond the limit", 10 * mib, 200 * mib, xfsMinimumSize, 0, codes.OutOfRange},
		{"rounding beyond the limit", mib + 1, mib + 2, 0, 0, codes.OutOfRange},
		{"limit equal to the rounded size", mib + 1, 2 * mib, 0, 2 * mib, codes.OK},
		{"required above limit", 2 * gib, gib, 0, 0, codes.InvalidArgument},
		{"negative", -1, 0, 0, 0, codes.InvalidArgument},
		{"beyond any pool", 1 << 62, 0, 0, 0, codes.OutOfRange},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := volumeSize(&csi.CapacityRange{RequiredBytes: tc.required, LimitBytes: tc.limit}, tc.minimum)
			if tc.code != codes.OK {
				wantCode(t, err, tc.code)
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %d, %v; want %d", got, err, tc.want)
			}
		})
	}
}

func TestControllerHumanBytes(t *testing.T) {
	for n, want := range map[int64]string{0: "0 bytes", 1023: "1023 bytes", 1 << 20: "1 MiB", 3 << 29: "1.5 GiB", 1<<40 + 1<<38: "1.25 TiB"} {
		if got := humanBytes(n); got != want {
			t.Errorf("humanBytes(%d) = %q, want %q", n, got, want)
		}
	}
}
