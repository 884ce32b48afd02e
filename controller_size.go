package main

import (
	"strconv"
	"strings"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"srvlab.io/rds-csi/routeros"
)

const (
	// defaultVolumeSize is given when a request names no size.
	defaultVolumeSize = int64(1) << 30
	// xfsMinimumSize: mkfs.xfs refuses file systems smaller than 300 MiB.
	xfsMinimumSize = int64(300) << 20
)

// volumeSize picks the size to allocate for a capacity range: the required bytes (1 GiB
// when none are given, but within the limit), at least minimum, rounded up to a whole MiB
// (the unit the RDS allocates in, so a volume never gets less than asked for). A limit
// that the rounding would exceed is OutOfRange.
func volumeSize(cr *csi.CapacityRange, minimum int64) (int64, error) {
	required, limit := cr.GetRequiredBytes(), cr.GetLimitBytes()
	switch {
	case required < 0 || limit < 0:
		return 0, status.Errorf(codes.InvalidArgument, "capacity_range has a negative size (required_bytes %d, limit_bytes %d)", required, limit)
	case limit > 0 && required > limit:
		return 0, status.Errorf(codes.InvalidArgument, "capacity_range asks for at least %s but at most %s", humanBytes(required), humanBytes(limit))
	case required > routeros.MaxDiskSize:
		return 0, status.Errorf(codes.OutOfRange, "requested size %s is larger than the largest volume rds-csi makes (%s)", humanBytes(required), humanBytes(routeros.MaxDiskSize))
	}
	size := required
	if size == 0 {
		size = defaultVolumeSize
		if limit > 0 && limit < size {
			size = limit
		}
	}
	size = routeros.RoundUpMiB(max(size, minimum))
	if limit > 0 && size > limit {
		why := "volumes are allocated in whole MiB"
		if minimum > 0 && size == routeros.RoundUpMiB(minimum) {
			why = "xfs volumes are at least " + humanBytes(minimum)
		}
		return 0, status.Errorf(codes.OutOfRange, "capacity limit %s is below the smallest size that can be provisioned, %s (%s): raise the limit", humanBytes(limit), humanBytes(size), why)
	}
	return size, nil
}

// sizeFits reports whether an existing volume of size bytes satisfies a capacity range and
// a minimum (the idempotency check of CreateVolume).
func sizeFits(size int64, cr *csi.CapacityRange, minimum int64) bool {
	limit := cr.GetLimitBytes()
	return size >= max(cr.GetRequiredBytes(), minimum) && (limit == 0 || size <= limit)
}

// humanBytes renders a byte count for messages, e.g. "1.5 GiB".
func humanBytes(n int64) string {
	units := []string{"bytes", "KiB", "MiB", "GiB", "TiB", "PiB"}
	v, i := float64(n), 0
	for v >= 1024 && i < len(units)-1 {
		v /= 1024
		i++
	}
	if i == 0 {
		return strconv.FormatInt(n, 10) + " bytes"
	}
	s := strings.TrimRight(strings.TrimRight(strconv.FormatFloat(v, 'f', 2, 64), "0"), ".")
	return s + " " + units[i]
}
