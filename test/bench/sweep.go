package main

import (
	"bufio"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"golang.org/x/sys/unix"

	"srvlab.io/rds-csi/internal/loopdev"
)

// sweepWork is the safety net after a run (or an interrupted one): it unmounts whatever is
// still mounted under the scratch directory and detaches loop devices still backed by
// files in it, and says what it had to do ("" when the driver left nothing behind).
func sweepWork(work string) string {
	var did []string
	for _, mp := range mountsUnder(work) {
		if err := unix.Unmount(mp, unix.MNT_DETACH); err == nil {
			did = append(did, "unmounted "+mp)
		} else {
			did = append(did, "could not unmount "+mp+": "+err.Error())
		}
	}
	_ = filepath.WalkDir(work, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".img") {
			return nil
		}
		devs, _ := loopdev.Find(path)
		for _, dev := range devs {
			if err := dev.Detach(); err == nil {
				did = append(did, "detached "+dev.Path+" ("+filepath.Base(path)+")")
			} else {
				did = append(did, "could not detach "+dev.Path+": "+err.Error())
			}
		}
		return nil
	})
	return strings.Join(did, "; ")
}

// mountsUnder lists the mount points at or below dir, deepest first.
func mountsUnder(dir string) []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var mps []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<16), 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		mp := unescapeMountinfo(fields[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			mps = append(mps, mp)
		}
	}
	slices.SortFunc(mps, func(a, b string) int { return strings.Count(b, "/") - strings.Count(a, "/") })
	return mps
}

// unescapeMountinfo undoes mountinfo's octal escapes (\040 for a space, ...).
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var sb strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			v := (s[i+1]-'0')<<6 | (s[i+2]-'0')<<3 | (s[i+3] - '0')
			sb.WriteByte(v)
			i += 3
			continue
		}
		sb.WriteByte(s[i])
	}
	return sb.String()
}
