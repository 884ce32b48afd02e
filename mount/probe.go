package mount

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
)

// Kind is what a probe found on a device.
type Kind string

const (
	KindBlank       Kind = "blank"       // every byte probed is zero
	KindExt4        Kind = "ext4"        //
	KindExt3        Kind = "ext3"        //
	KindExt2        Kind = "ext2"        //
	KindXFS         Kind = "xfs"         //
	KindBtrfs       Kind = "btrfs"       //
	KindPartitioned Kind = "partitioned" // MBR or GPT: the volume was used as a whole disk
	KindUnknown     Kind = "unknown"     // non-zero data no rule here recognises
)

// ProbeResult is the probe's verdict; Detail says what was seen where.
type ProbeResult struct {
	Kind   Kind
	Detail string
	// Size is the filesystem's own size in bytes, from its superblock (ext and xfs;
	// 0 for anything else). A volume restored or cloned to a larger size holds a
	// filesystem smaller than its disk until it is grown.
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

// Probe reads the device's superblock areas directly (both ends in full,
// plus samples inside) and says what is there. It does not trust blkid or
// udev, which report "nothing" when they could not read. Any read error or
// short read is an error, and KindBlank means every byte read was zero.
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

// classify names what the probe read.
func classify(p *probed) ProbeResult {
	if p.at(0, len(xfsMagic)) == xfsMagic {
		// sb_blocksize (big-endian u32 at 4) times sb_dblocks (u64 at 8): the data
		// section, which holds an internal log too.
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
	if off, ok := findGPT(p); ok {
		return ProbeResult{Kind: KindPartitioned, Detail: fmt.Sprintf("GPT header at offset %d", off)}
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
	extCompatHasJournal    = 0x4
	extIncompatRecover     = 0x4
	extIncompatJournalDev  = 0x8
	ext3IncompatSupported  = 0x2 | 0x4 | 0x10 // filetype, recover, meta_bg
	ext3ROCompatSupported  = 0x1 | 0x2 | 0x4  // sparse_super, large_file, btree_dir
	extCompatOffset        = 0x5C
	extIncompatOffset      = 0x60
	extROCompatOffset      = 0x64
	extUUIDOffset          = 0x68
	extVolumeNameOffset    = 0x78
	extVolumeNameMaxLength = 16
	extBlocksCountLo       = 0x04  // s_blocks_count_lo
	extLogBlockSize        = 0x18  // block size = 1024 << s_log_block_size
	extBlocksCountHi       = 0x150 // s_blocks_count_hi, with the 64bit feature
	extIncompat64Bit       = 0x80
)

func classifyExt(sb []byte) ProbeResult {
	compat := binary.LittleEndian.Uint32(sb[extCompatOffset:])
	incompat := binary.LittleEndian.Uint32(sb[extIncompatOffset:])
	roCompat := binary.LittleEndian.Uint32(sb[extROCompatOffset:])
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
	label := string(bytes.TrimRight(sb[extVolumeNameOffset:extVolumeNameOffset+extVolumeNameMaxLength], "\x00"))
	detail := fmt.Sprintf("%s superblock at offset 1024 (uuid %s, label %q)", kind, uuidString(sb[extUUIDOffset:extUUIDOffset+16]), label)
	if incompat&extIncompatRecover != 0 {
		detail += "; the journal needs recovery, which mounting replays"
	}
	blocks := uint64(binary.LittleEndian.Uint32(sb[extBlocksCountLo:]))
	if incompat&extIncompat64Bit != 0 {
		blocks |= uint64(binary.LittleEndian.Uint32(sb[extBlocksCountHi:])) << 32
	}
	size := int64(blocks) << (10 + min(binary.LittleEndian.Uint32(sb[extLogBlockSize:]), 6)) // at most 64 KiB blocks
	return ProbeResult{kind, detail, size}
}

// findGPT looks for a GPT header at LBA 1 (512- or 4096-byte sectors) and
// for the backup header in the last LBA.
func findGPT(p *probed) (int64, bool) {
	for _, off := range []int64{512, 4096, p.size - 512, p.size - 4096} {
		if p.at(off, len(gptMagic)) == gptMagic {
			return off, true
		}
	}
	return 0, false
}

// knownSignature names a well-known signature found in any region, so the
// refusal message helps whoever reads it.
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
		// Backup superblocks start a block group: at offset 0 of a
		// 4K-block group, 1024 bytes into a 1K-block one.
		for _, off := range []int64{extMagicOffset, extSuperblock + extMagicOffset} {
			if p.at(reg.off+off, 2) == "\x53\xef" {
				return fmt.Sprintf(" (an ext backup superblock near offset %d: the primary one is damaged; e2fsck can restore it)", reg.off)
			}
		}
	}
	return ""
}

// firstNonZero returns the index of b's first non-zero byte, or -1.
func firstNonZero(b []byte) int {
	for i, c := range b {
		if c != 0 {
			return i
		}
	}
	return -1
}

func uuidString(b []byte) string {
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}
