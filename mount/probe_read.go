package mount

import (
	"errors"
	"fmt"
	"io"
	"os"
	"slices"

	"golang.org/x/sys/unix"
)

const (
	mib = 1 << 20
	// edgeSize is read in full at both ends of the device: partition
	// tables, boot sectors and every supported superblock live in the first
	// MiB; the GPT backup header and some labels live in the last.
	edgeSize = 1 * mib
	// sampleSize is read at each interior sample offset.
	sampleSize = 4096
	// alignment satisfies O_DIRECT on 512-byte and 4K-sector devices.
	alignment = 4096
)

// region is one stretch of the device as read.
type region struct {
	off  int64
	data []byte
}

// openDevice opens a block device (with O_DIRECT, so the probe sees the
// device and not a stale page cache) or a regular file (tests, loop
// stand-ins), and returns its size. Anything else is an error.
func openDevice(path string) (io.ReaderAt, int64, func() error, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return nil, 0, nil, fmt.Errorf("stat %s: %w", path, err)
	}
	isBlock := st.Mode&unix.S_IFMT == unix.S_IFBLK
	if !isBlock && st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil, 0, nil, fmt.Errorf("%s is neither a block device nor a regular file (mode %#o)", path, st.Mode)
	}
	flags := os.O_RDONLY | unix.O_CLOEXEC
	if isBlock {
		flags |= unix.O_DIRECT
	}
	f, err := os.OpenFile(path, flags, 0)
	if err != nil {
		return nil, 0, nil, fmt.Errorf("open %s: %w", path, err)
	}
	size := st.Size
	if isBlock {
		n, err := blockDeviceSize(f)
		if err != nil {
			f.Close()
			return nil, 0, nil, fmt.Errorf("size of %s: %w", path, err)
		}
		size = n
	}
	return f, size, f.Close, nil
}

func blockDeviceSize(f *os.File) (int64, error) {
	// BLKGETSIZE64 writes a u64; IoctlGetInt reads it whole on 64-bit Linux.
	n, err := unix.IoctlGetInt(int(f.Fd()), unix.BLKGETSIZE64)
	if err != nil {
		return 0, err
	}
	return int64(n), nil
}

// probeOffsets lists where to read: both edges in full, and 4 KiB samples
// at every power-of-two MiB, at each sixteenth of the device (xfs puts a
// superblock at every allocation-group start) and at the ext backup
// superblocks of 4K-block filesystems (block groups 3^n, 5^n, 7^n). A
// filesystem whose primary superblock was wiped still shows up in them.
func probeOffsets(size int64) []region {
	regions := []region{{off: 0, data: alignedBuffer(min(edgeSize, size))}}
	if size > edgeSize {
		tail := alignDown(max(size-edgeSize, edgeSize))
		regions = append(regions, region{off: tail, data: alignedBuffer(size - tail)})
	}
	var samples []int64
	for off := int64(2 * mib); off < size; off *= 2 {
		samples = append(samples, off)
	}
	for k := int64(1); k < 16; k++ {
		samples = append(samples, alignDown(size*k/16))
	}
	const extGroup = 128 * mib // 32768 blocks of 4 KiB
	for _, base := range []int64{3, 5, 7} {
		for g := int64(1); g*extGroup < size; g *= base {
			samples = append(samples, g*extGroup)
		}
	}
	slices.Sort(samples)
	samples = slices.Compact(samples)
	for _, off := range samples {
		// Samples inside the edges are already read.
		if off < edgeSize || off+sampleSize > size-edgeSize {
			continue
		}
		regions = append(regions, region{off: off, data: alignedBuffer(sampleSize)})
	}
	return regions
}

// readRegions fills every region completely from r. A failed or short
// read is an error: a region we could not read is not known to be zero.
func readRegions(r io.ReaderAt, size int64) ([]region, error) {
	if size < edgeSize {
		return nil, fmt.Errorf("device is %d bytes, smaller than the %d bytes a probe needs; it cannot be a volume", size, edgeSize)
	}
	regions := probeOffsets(size)
	for _, reg := range regions {
		n, err := r.ReadAt(reg.data, reg.off)
		if n == len(reg.data) {
			continue // ReadAt may report io.EOF along with a full read at the end
		}
		if err == nil || errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, fmt.Errorf("short read at offset %d: got %d of %d bytes: %w", reg.off, n, len(reg.data), err)
	}
	return regions, nil
}

func alignDown(off int64) int64 { return off &^ (alignment - 1) }

// alignedBuffer returns n bytes starting on an alignment boundary, as
// O_DIRECT requires.
func alignedBuffer(n int64) []byte {
	buf := make([]byte, int(n)+alignment)
	shift := 0
	if rem := int(uintptrOfSlice(buf) % alignment); rem != 0 {
		shift = alignment - rem
	}
	return buf[shift : shift+int(n) : shift+int(n)]
}
