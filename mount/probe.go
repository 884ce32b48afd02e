package mount

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Kind is what a probe found on a device.
type Kind string

const (
	KindBlank       Kind = "blank" // every byte probed is zero
	KindExt4        Kind = "ext4"
	KindExt3        Kind = "ext3"
	KindExt2        Kind = "ext2"
	KindXFS         Kind = "xfs"
	KindBtrfs       Kind = "btrfs"
	KindPartitioned Kind = "partitioned" // MBR or GPT: the volume was used as a whole disk
	KindUnknown     Kind = "unknown"     // non-zero data no rule here recognises
)

// ProbeResult is the probe's verdict; Detail says what was seen where.
type ProbeResult struct {
	Kind   Kind
	Detail string
	// Size is the filesystem's own size from its superblock (ext and xfs, else 0): a volume
	// restored or cloned to a larger size holds a smaller filesystem until it is grown.
	Size int64
}

// On-disk signatures, from the filesystems' format documentation.
const (
	xfsMagic         = "XFSB" // at offset 0
	extSuperblock    = 1024   // primary ext2/3/4 superblock
	extMagicOffset   = 56     // within an ext superblock, little-endian 0xEF53
	extMagic         = 0xEF53
	btrfsMagicOffset = 64<<10 + 64 // primary btrfs superblock at 64 KiB, magic at +64
	btrfsMirror      = 64 << 20    // first btrfs mirror superblock
	btrfsMagic       = "_BHRfS_M"
	gptMagic         = "EFI PART"
	mbrSignature     = 510 // 0x55 0xAA
)

// opener opens a device for probing: a seam so tests can make reads fail.
type opener func(path string) (r io.ReaderAt, size int64, closeFn func() error, err error)

// Probe reads the device's superblock areas itself (both ends in full, samples inside) and
// says what is there: blkid and udev report "nothing" when they could not read. Any read
// error or short read is an error; KindBlank means every byte read was zero.
func Probe(ctx context.Context, device string) (ProbeResult, error) {
	return probeWith(ctx, device, openDevice)
}

func probeWith(ctx context.Context, device string, open opener) (ProbeResult, error) {
	res, err := bounded(ctx, "probe "+device, func() (ProbeResult, error) {
		r, size, closeFn, err := open(device)
		if err != nil {
			return ProbeResult{}, err
		}
		defer closeFn()
		read, err := readRegions(r, size)
		if err != nil {
			return ProbeResult{}, err
		}
		return classify(read), nil
	})
	if err != nil {
		return ProbeResult{}, fmt.Errorf("probe %s: cannot tell whether it holds data: %w", device, err)
	}
	return res, nil
}

func classify(p *probed) ProbeResult {
	if p.at(0, len(xfsMagic)) == xfsMagic {
		// sb_blocksize (big-endian u32 at 4) × sb_dblocks (u64 at 8), internal log included.
		var size int64
		if sb := []byte(p.at(0, 16)); len(sb) == 16 {
			size = int64(binary.BigEndian.Uint32(sb[4:])) * int64(binary.BigEndian.Uint64(sb[8:]))
		}
		return ProbeResult{KindXFS, fmt.Sprintf("xfs superblock at offset 0 (uuid %s)", uuidString([]byte(p.at(32, 16)))), size}
	}
	if sb := p.at(extSuperblock, 1024); binary.LittleEndian.Uint16([]byte(sb[extMagicOffset:])) == extMagic {
		return classifyExt([]byte(sb))
	}
	if p.at(btrfsMagicOffset, len(btrfsMagic)) == btrfsMagic {
		return ProbeResult{Kind: KindBtrfs, Detail: fmt.Sprintf("btrfs superblock at offset %d (fsid %s)", btrfsMagicOffset-64, uuidString([]byte(p.at(btrfsMagicOffset-64+32, 16))))}
	}
	// A GPT header at LBA 1 (512- or 4096-byte sectors), or the backup header in the last LBA.
	for _, off := range []int64{512, 4096, p.size - 512, p.size - 4096} {
		if p.at(off, len(gptMagic)) == gptMagic {
			return ProbeResult{Kind: KindPartitioned, Detail: fmt.Sprintf("GPT header at offset %d", off)}
		}
	}
	if p.at(mbrSignature, 2) == "\x55\xaa" {
		return ProbeResult{Kind: KindPartitioned, Detail: "MBR boot signature 0x55AA at offset 510 (a partition table or boot sector)"}
	}
	if p.firstNonZero >= 0 {
		return ProbeResult{Kind: KindUnknown, Detail: fmt.Sprintf("non-zero data at offset %d%s", p.firstNonZero, knownSignature(p))}
	}
	return ProbeResult{Kind: KindBlank, Detail: fmt.Sprintf("all %d bytes read (%d areas) are zero", p.read, len(p.regions))}
}

// Feature bits that separate ext4 from ext3 and ext2 (as blkid does).
const (
	extCompatHasJournal   = 0x4
	extIncompatRecover    = 0x4
	extIncompatJournalDev = 0x8
	extIncompat64Bit      = 0x80
	ext3IncompatSupported = 0x2 | 0x4 | 0x10 // filetype, recover, meta_bg
	ext3ROCompatSupported = 0x1 | 0x2 | 0x4  // sparse_super, large_file, btree_dir
)

// classifyExt reads an ext superblock (offsets from the kernel's struct ext4_super_block).
func classifyExt(sb []byte) ProbeResult {
	le32 := func(off int) uint32 { return binary.LittleEndian.Uint32(sb[off:]) }
	compat, incompat, roCompat := le32(0x5C), le32(0x60), le32(0x64)
	if incompat&extIncompatJournalDev != 0 {
		return ProbeResult{Kind: KindUnknown, Detail: "ext external journal device at offset 1024"}
	}
	kind := KindExt2
	switch {
	case incompat&^ext3IncompatSupported != 0 || roCompat&^ext3ROCompatSupported != 0:
		kind = KindExt4
	case compat&extCompatHasJournal != 0:
		kind = KindExt3
	}
	label := string(bytes.TrimRight(sb[0x78:0x78+16], "\x00")) // s_volume_name
	detail := fmt.Sprintf("%s superblock at offset 1024 (uuid %s, label %q)", kind, uuidString(sb[0x68:0x68+16]), label)
	if incompat&extIncompatRecover != 0 {
		detail += "; the journal needs recovery, which mounting replays"
	}
	blocks := uint64(le32(0x04)) // s_blocks_count_lo, and _hi with the 64bit feature
	if incompat&extIncompat64Bit != 0 {
		blocks |= uint64(le32(0x150)) << 32
	}
	// The block size is 1024 << s_log_block_size, at most 64 KiB.
	return ProbeResult{kind, detail, int64(blocks) << (10 + min(le32(0x18), 6))}
}

// knownSignature names a well-known signature in any region, for the refusal message.
func knownSignature(p *probed) string {
	checks := []struct {
		off  int64
		sig  string
		name string
	}{
		{0, "LUKS\xba\xbe", "a LUKS header"},
		{512, "LABELONE", "an LVM2 physical-volume label"},
		{4086, "SWAPSPACE2", "a swap signature"},
		{btrfsMirror + 64, btrfsMagic, "a btrfs mirror superblock"},
	}
	for _, reg := range p.regions {
		for _, c := range checks {
			if regionHolds(reg, c.off, int64(len(c.sig))) && p.at(c.off, len(c.sig)) == c.sig {
				return " (" + c.name + ")"
			}
		}
		if reg.off == 0 {
			continue
		}
		// Backup superblocks start a block group: at 0 of a 4K-block one, 1024 into a 1K one.
		for _, off := range []int64{extMagicOffset, extSuperblock + extMagicOffset} {
			if p.at(reg.off+off, 2) == "\x53\xef" {
				return fmt.Sprintf(" (an ext backup superblock near offset %d: the primary one is damaged; e2fsck can restore it)", reg.off)
			}
		}
	}
	return ""
}

func uuidString(b []byte) string {
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

const (
	mib = 1 << 20
	// edgeSize is read in full at both ends: partition tables, boot sectors and every
	// supported superblock live in the first MiB, the GPT backup and some labels in the last.
	edgeSize   = 1 * mib
	sampleSize = 4096 // read at each interior sample offset
	alignment  = 4096 // O_DIRECT on 512-byte and 4K-sector devices
	// chunkSize is one read through one pooled, aligned buffer: a probe holds 64 KiB
	// however much it reads.
	chunkSize = 64 << 10
)

// region is one stretch of the device to read.
type region struct{ off, n int64 }

var chunkPool = sync.Pool{New: func() any {
	b := alignedBuffer(chunkSize)
	return &b
}}

// openDevice opens a block device (O_DIRECT: the device, not a stale page cache) or a
// regular file (tests, loop stand-ins) and returns its size.
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
	if !isBlock {
		return f, st.Size, f.Close, nil
	}
	// BLKGETSIZE64 writes a u64; IoctlGetInt reads it whole on 64-bit Linux.
	size, err := unix.IoctlGetInt(int(f.Fd()), unix.BLKGETSIZE64)
	if err != nil {
		f.Close()
		return nil, 0, nil, fmt.Errorf("size of %s: %w", path, err)
	}
	return f, int64(size), f.Close, nil
}

// probeOffsets lists where to read: both edges in full, and 4 KiB samples at every
// power-of-two MiB, each sixteenth of the device (xfs allocation-group superblocks) and the
// ext backup superblocks of 4K-block filesystems (groups 3^n, 5^n, 7^n), so a filesystem
// whose primary superblock was wiped still shows up.
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
		if off < edgeSize || off+sampleSize > size-edgeSize {
			continue
		}
		regions = append(regions, region{off: off, n: sampleSize})
	}
	return regions
}

// readRegions reads every region completely and keeps what classify looks at. A failed or
// short read is an error: a region not read is not known to be zero.
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

// probed is what a probe read: the regions, copies of the byte ranges classify and
// knownSignature look at (windows, data in bytes), and the first non-zero byte.
type probed struct {
	size         int64
	regions      []region
	windows      []region
	bytes        [][]byte
	firstNonZero int64 // absolute offset, in region order; -1 when every byte read was zero
	read         int64
}

func newProbed(size int64, regions []region) *probed {
	p := &probed{size: size, regions: regions, firstNonZero: -1}
	want := []region{
		{0, 48},                     // xfs magic and uuid, LUKS
		{mbrSignature, 10},          // MBR signature, GPT header and LVM label at 512
		{extSuperblock, 1024},       // the primary ext superblock
		{4086, 18},                  // swap signature, GPT header at 4096
		{btrfsMagicOffset - 64, 72}, // btrfs superblock: fsid and magic
		{btrfsMirror + 64, 8},       // first btrfs mirror superblock's magic
		{size - 4096, 8},            // backup GPT headers
		{size - 512, 8},
	}
	for _, reg := range regions {
		if reg.off != 0 {
			want = append(want, region{reg.off + extMagicOffset, 2}, region{reg.off + extSuperblock + extMagicOffset, 2})
		}
	}
	for _, w := range want {
		if slices.ContainsFunc(regions, func(reg region) bool { return regionHolds(reg, w.off, w.n) }) {
			p.windows = append(p.windows, w)
			p.bytes = append(p.bytes, make([]byte, w.n))
		}
	}
	return p
}

func (p *probed) take(off int64, chunk []byte) {
	p.read += int64(len(chunk))
	if p.firstNonZero < 0 {
		if i := slices.IndexFunc(chunk, func(c byte) bool { return c != 0 }); i >= 0 {
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

func regionHolds(reg region, off, n int64) bool {
	return off >= reg.off && off+n <= reg.off+reg.n
}

// at returns the n bytes read at off, or "" when no window holds them.
func (p *probed) at(off int64, n int) string {
	for i, w := range p.windows {
		if regionHolds(w, off, int64(n)) {
			return string(p.bytes[i][off-w.off : off-w.off+int64(n)])
		}
	}
	return ""
}

func alignDown(off int64) int64 { return off &^ (alignment - 1) }

// alignedBuffer returns n bytes on an alignment boundary, as O_DIRECT requires (the Go
// heap does not move objects, so the address stays aligned).
func alignedBuffer(n int64) []byte {
	buf := make([]byte, int(n)+alignment)
	shift := (alignment - int(uintptrOfSlice(buf)%alignment)) % alignment
	return buf[shift : shift+int(n) : shift+int(n)]
}

func uintptrOfSlice(buf []byte) uintptr { return uintptr(unsafe.Pointer(unsafe.SliceData(buf))) }
