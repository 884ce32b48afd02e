package mount

import (
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sync"
	"unsafe"

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

// region is one stretch of the device to read.
type region struct {
	off, n int64
}

// chunkSize is how much one read takes: regions are read through one pooled, aligned
// buffer of this size, so a probe holds 64 KiB however much it reads.
const chunkSize = 64 << 10

// chunkPool keeps the aligned read buffers between probes.
var chunkPool = sync.Pool{New: func() any {
	b := alignedBuffer(chunkSize)
	return &b
}}

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
	regions := []region{{off: 0, n: min(edgeSize, size)}}
	if size > edgeSize {
		tail := alignDown(max(size-edgeSize, edgeSize))
		regions = append(regions, region{off: tail, n: size - tail})
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
		regions = append(regions, region{off: off, n: sampleSize})
	}
	return regions
}

// readRegions reads every region completely from r, in chunks through one pooled
// buffer, and keeps what classify looks at: the signature windows (probed.windows),
// where the first non-zero byte is, and how much was read. A failed or short read is an
// error: a region we could not read is not known to be zero.
func readRegions(r io.ReaderAt, size int64) (*probed, error) {
	if size < edgeSize {
		return nil, fmt.Errorf("device is %d bytes, smaller than the %d bytes a probe needs; it cannot be a volume", size, edgeSize)
	}
	p := newProbed(size, probeOffsets(size))
	bufp := chunkPool.Get().(*[]byte)
	defer chunkPool.Put(bufp)
	buf := *bufp
	for _, reg := range p.regions {
		for off := reg.off; off < reg.off+reg.n; off += chunkSize {
			chunk := buf[:min(chunkSize, reg.off+reg.n-off)]
			n, err := r.ReadAt(chunk, off)
			if n != len(chunk) {
				if err == nil || errors.Is(err, io.EOF) {
					err = io.ErrUnexpectedEOF
				}
				return nil, fmt.Errorf("short read at offset %d: got %d of %d bytes: %w", off, n, len(chunk), err)
			}
			// ReadAt may report io.EOF along with a full read at the end.
			p.take(off, chunk)
		}
	}
	return p, nil
}

// probed is what a probe read: the regions, copies of the few byte ranges the
// classification rules look at, and the first non-zero byte.
type probed struct {
	size         int64
	regions      []region
	windows      []region // the captured ranges, data in bytes
	bytes        [][]byte
	firstNonZero int64 // absolute offset, in region order; -1 when every byte read was zero
	read         int64
}

// signatureWindows are the byte ranges classify and knownSignature read (offset,
// length), besides the ext backup-superblock magics at the start of each region.
func signatureWindows(size int64) []region {
	return []region{
		{0, 48},                     // xfs magic and uuid, LUKS
		{mbrSignature, 10},          // MBR signature, GPT header and LVM label at 512
		{extSuperblock, 1024},       // the primary ext superblock
		{4086, 18},                  // swap signature, GPT header at 4096
		{btrfsMagicOffset - 64, 72}, // btrfs superblock: fsid and magic
		{btrfsMirror + 64, 8},       // first btrfs mirror superblock's magic
		{size - 4096, 8},            // backup GPT headers
		{size - 512, 8},
	}
}

func newProbed(size int64, regions []region) *probed {
	p := &probed{size: size, regions: regions, firstNonZero: -1}
	want := signatureWindows(size)
	for _, reg := range regions {
		if reg.off != 0 {
			want = append(want, region{reg.off + extMagicOffset, 2}, region{reg.off + extSuperblock + extMagicOffset, 2})
		}
	}
	for _, w := range want {
		if p.covered(w.off, w.n) {
			p.windows = append(p.windows, w)
			p.bytes = append(p.bytes, make([]byte, w.n))
		}
	}
	return p
}

// take notes a chunk read at off.
func (p *probed) take(off int64, chunk []byte) {
	p.read += int64(len(chunk))
	if p.firstNonZero < 0 {
		if i := firstNonZero(chunk); i >= 0 {
			p.firstNonZero = off + int64(i)
		}
	}
	end := off + int64(len(chunk))
	for i, w := range p.windows {
		lo, hi := max(off, w.off), min(end, w.off+w.n)
		if lo < hi {
			copy(p.bytes[i][lo-w.off:], chunk[lo-off:hi-off])
		}
	}
}

// covered reports whether one region holds the n bytes at off.
func (p *probed) covered(off, n int64) bool {
	for _, reg := range p.regions {
		if regionHolds(reg, off, n) {
			return true
		}
	}
	return false
}

func regionHolds(reg region, off, n int64) bool {
	return off >= reg.off && off+n <= reg.off+reg.n
}

// at returns the n bytes read at off, or "" when no captured window holds them.
func (p *probed) at(off int64, n int) string {
	for i, w := range p.windows {
		if regionHolds(w, off, int64(n)) {
			return string(p.bytes[i][off-w.off : off-w.off+int64(n)])
		}
	}
	return ""
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

// uintptrOfSlice is the address of buf's first byte, to align O_DIRECT
// buffers. The heap does not move objects, so the address stays valid.
func uintptrOfSlice(buf []byte) uintptr { return uintptr(unsafe.Pointer(unsafe.SliceData(buf))) }
