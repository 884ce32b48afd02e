package main

import (
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"srvlab.io/rds-csi/internal/loopdev"
	"srvlab.io/rds-csi/test/internal/scratch"
)

// sweepWork is the safety net after a run (or an interrupted one): it unmounts whatever is
// still mounted under the scratch directory and detaches loop devices still backed by
// files in it, and says what it had to do ("" when the driver left nothing behind).
func sweepWork(work string) string {
	var did []string
	mps, err := scratch.MountsUnder(work)
	if err != nil {
		did = append(did, "could not check for mounts: "+err.Error())
	}
	for _, mp := range mps {
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
