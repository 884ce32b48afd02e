package sim

import (
	"context"
	"errors"
	"io"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// copyJob is one /file copy writing its destination. It never takes the state lock, so
// holders of the lock may cancel it and wait for it.
type copyJob struct {
	pool   *Pool
	total  int64
	cancel context.CancelFunc
	done   chan struct{}
	err    error // set before done is closed
}

func (j *copyJob) running() bool {
	select {
	case <-j.done:
		return false
	default:
		return true
	}
}

// copySteps is how many pieces a timed copy (Options.CopyDuration) writes, so its size
// visibly grows.
const copySteps = 20

// fileCopy implements `/file copy "src" name="dst"`: a real copy of the data (a reflink where
// the filesystem can, otherwise a sparse-aware copy). The destination exists at once; with
// Options.CopyDuration the command returns immediately and the destination grows to full
// size over that time, else the command returns when the copy is complete.
func (s *Sim) fileCopy(env *execEnv, c *command) (result, error) {
	if len(c.args) == 0 || (c.args[0].kind != elString && c.args[0].kind != elWord) {
		return result{}, errNoSuchItem
	}
	args, err := namedArgs(env, c.args[1:], keySet("name"))
	if err != nil {
		return result{}, err
	}
	dstEl, ok := args["name"]
	if !ok || dstEl.val.sub != nil {
		return result{}, invalidValue("name")
	}
	srcName := strings.TrimPrefix(c.args[0].val.text, "/")
	dstName := strings.TrimPrefix(dstEl.val.text, "/")
	srcHost := s.HostPath(srcName)
	if _, err := s.poolOfPath(srcName); err != nil {
		return result{}, errNoSuchItem
	}
	st, err := os.Stat(srcHost)
	if err != nil || !st.Mode().IsRegular() {
		return result{}, errNoSuchItem
	}
	pool, err := s.poolOfPath(dstName)
	if err != nil {
		return result{}, err
	}
	dstHost := s.HostPath(dstName)
	if _, err := os.Lstat(dstHost); err == nil {
		return result{}, failure("file %q already exists", dstName)
	}
	if err := s.reserve(pool, st.Size()); err != nil {
		return result{}, err
	}
	if err := os.MkdirAll(s.HostPath(parentOf(dstName)), 0o755); err != nil {
		return result{}, failure("create directory for %q: %v", dstName, err)
	}
	dst, err := os.OpenFile(dstHost, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return result{}, failure("create %q: %v", dstName, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	job := &copyJob{pool: pool, total: st.Size(), cancel: cancel, done: make(chan struct{})}
	s.copies[dstHost] = job
	s.pruneCopies()
	dur := s.opts.CopyDuration
	prealloc := dur > 0 && s.opts.CopyPreallocate
	if prealloc {
		if err := dst.Truncate(job.total); err != nil {
			dst.Close()
			_ = os.Remove(dstHost)
			delete(s.copies, dstHost)
			cancel()
			return result{}, failure("create %q: %v", dstName, err)
		}
	}
	go func() {
		defer close(job.done)
		defer cancel()
		job.err = copyData(ctx, srcHost, dst, job.total, dur, prealloc)
		if cerr := dst.Close(); job.err == nil {
			job.err = cerr
		}
		if job.err != nil {
			s.logf("rds-sim: copy %s to %s: %v", srcName, dstName, job.err)
		}
	}()
	if dur > 0 {
		return result{}, nil
	}
	return result{after: func() error {
		select {
		case <-job.done:
			if job.err != nil && !errors.Is(job.err, context.Canceled) {
				return failure("copy %q: %v", srcName, job.err)
			}
			return nil
		case <-env.ctx.Done():
			return env.ctx.Err()
		}
	}}, nil
}

func parentOf(name string) string {
	if i := strings.LastIndexByte(name, '/'); i >= 0 {
		return name[:i]
	}
	return ""
}

// pruneCopies forgets finished copies (called with the state lock held).
func (s *Sim) pruneCopies() {
	for k, j := range s.copies {
		if !j.running() {
			delete(s.copies, k)
		}
	}
}

// copyData copies total bytes of srcPath into dst. Without a duration it first tries a
// reflink (FICLONE: instant on btrfs/xfs); otherwise it copies only the data extents, piece
// by piece, growing dst to each piece's end so readers see the size advance — unless dst
// was preallocated to its full size, when only its modification time advances.
func copyData(ctx context.Context, srcPath string, dst *os.File, total int64, dur time.Duration, prealloc bool) error {
	src, err := os.Open(srcPath)
	if err != nil {
		return err
	}
	defer src.Close()
	if dur <= 0 {
		if err := unix.IoctlFileClone(int(dst.Fd()), int(src.Fd())); err == nil {
			return dst.Truncate(total)
		}
	}
	steps := int64(1)
	if dur > 0 {
		steps = copySteps
	}
	for i := int64(0); i < steps; i++ {
		if dur > 0 {
			t := time.NewTimer(dur / time.Duration(steps))
			select {
			case <-ctx.Done():
				t.Stop()
				return ctx.Err()
			case <-t.C:
			}
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		a, b := total*i/steps, total*(i+1)/steps
		if err := copyExtents(src, dst, a, b); err != nil {
			return err
		}
		if prealloc {
			continue
		}
		if err := dst.Truncate(b); err != nil {
			return err
		}
	}
	return nil
}

// copyExtents copies the data (not the holes) of src in [from, to) to the same offsets of
// dst, so a sparse volume stays sparse.
func copyExtents(src, dst *os.File, from, to int64) error {
	sfd := int(src.Fd())
	for off := from; off < to; {
		data, err := unix.Seek(sfd, off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			return nil // only a hole is left
		}
		if err != nil { // no SEEK_DATA here: treat everything as data
			return copyRange(src, dst, off, to)
		}
		if data >= to {
			return nil
		}
		hole, err := unix.Seek(sfd, data, unix.SEEK_HOLE)
		if err != nil {
			hole = to
		}
		end := min(hole, to)
		if err := copyRange(src, dst, data, end); err != nil {
			return err
		}
		off = end
	}
	return nil
}

// copyRange copies [from, to) with copy_file_range (which may share extents), falling back
// to plain reads and writes.
func copyRange(src, dst *os.File, from, to int64) error {
	roff, woff := from, from
	for roff < to {
		n, err := unix.CopyFileRange(int(src.Fd()), &roff, int(dst.Fd()), &woff, int(min(to-roff, 1<<30)), 0)
		if err != nil || n == 0 {
			return copyBuffered(src, dst, roff, to)
		}
	}
	return nil
}

func copyBuffered(src, dst *os.File, from, to int64) error {
	buf := make([]byte, 1<<20)
	for off := from; off < to; {
		n, err := src.ReadAt(buf[:min(int64(len(buf)), to-off)], off)
		if n > 0 {
			if _, werr := dst.WriteAt(buf[:n], off); werr != nil {
				return werr
			}
			off += int64(n)
		}
		if err == io.EOF {
			return nil // the source shrank while we copied
		}
		if err != nil {
			return err
		}
	}
	return nil
}
