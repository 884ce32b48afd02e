package routeros_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"srvlab.io/rds-csi/routeros"
	"srvlab.io/rds-csi/routeros/sim"
)

// GetFile finds one file by its exact path, directories too, and nothing by prefix.
func TestSimGetFile(t *testing.T) {
	ts, c := startSim(t, sim.Options{Width: 40})
	ctx := ctxT(t, 20*time.Second)
	d, err := c.CreateDisk(ctx, createReq(slotN(1), 3<<29))
	if err != nil {
		t.Fatal(err)
	}
	f, err := c.GetFile(ctx, d.FilePath)
	if err != nil {
		t.Fatal(err)
	}
	if f.Path != d.FilePath || f.Type != ".img" || f.SizeText != "1536.0MiB" || f.LastModified.IsZero() {
		t.Errorf("GetFile: %+v", f)
	}
	if !routeros.PrintedSizeMatches(f.SizeText, d.Size) {
		t.Errorf("printed size %q does not match the disk's %d bytes", f.SizeText, d.Size)
	}
	if dir, err := c.GetFile(ctx, base); err != nil || dir.Type != "directory" {
		t.Errorf("GetFile of the directory: %+v, %v", dir, err)
	}
	for _, missing := range []string{base + "/" + slotN(2) + ".img", d.FilePath[:len(d.FilePath)-4]} {
		if _, err := c.GetFile(ctx, missing); !errors.Is(err, routeros.ErrNotFound) {
			t.Errorf("GetFile(%s): %v, want ErrNotFound", missing, err)
		}
	}
	if _, err := c.GetFile(ctx, "/elsewhere/x.img"); !errors.Is(err, routeros.ErrInvalidArgument) {
		t.Errorf("GetFile outside the bases: %v, want ErrInvalidArgument", err)
	}
	if n := countCommands(ts, `/file print detail where name="storage-pool/metal-csi/`+slotN(1)+`.img"`); n != 1 {
		t.Errorf("GetFile sent %q", ts.Commands())
	}
}

// A disk's comment is set in the create command itself and read back exactly, at any
// console width; a comment that could carry syntax is refused before anything is sent.
func TestSimCreateWithComment(t *testing.T) {
	for _, width := range []int{40, 80, -1} {
		t.Run(fmt.Sprint(width), func(t *testing.T) {
			ts, c := startSim(t, sim.Options{Width: width})
			ctx := ctxT(t, 20*time.Second)
			req := createReq(slotN(1), 1<<30)
			req.Comment = "rds-csi: copy of snapshot snapshot-0b7d2c4e-5d4f-4d0a-9a56-2f1e9c3b8a71"
			d, err := c.CreateDisk(ctx, req)
			if err != nil {
				t.Fatal(err)
			}
			if d.Comment != req.Comment {
				t.Errorf("comment read back as %q, want %q", d.Comment, req.Comment)
			}
			if countCommands(ts, "/disk add", `comment="`+req.Comment+`"`) != 1 {
				t.Errorf("no create carrying the comment in %q", ts.Commands())
			}
			req = createReq(slotN(2), 1<<30)
			req.Comment = `x" nvme-tcp-export=no`
			if _, err := c.CreateDisk(ctx, req); !errors.Is(err, routeros.ErrInvalidArgument) {
				t.Errorf("comment with a quote: %v, want ErrInvalidArgument", err)
			}
		})
	}
}
