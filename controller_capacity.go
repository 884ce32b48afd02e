package main

import (
	"context"
	"errors"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"srvlab.io/rds-csi/routeros"
)

// GetCapacity reports the free space of the pool holding the class's volumePath, less
// --capacity-reserve. A volume can be as large as that (file disks live in one pool).
func (c *controllerService) GetCapacity(ctx context.Context, req *csi.GetCapacityRequest) (*csi.GetCapacityResponse, error) {
	volumePath := c.cfg.RDSVolumePath
	if v, ok := req.GetParameters()[paramVolumePath]; ok {
		if msg := c.checkVolumePath(v); msg != "" {
			return nil, status.Error(codes.InvalidArgument, msg)
		}
		volumePath = v
	}
	if len(req.GetVolumeCapabilities()) > 0 {
		if _, err := checkCapabilities(req.GetVolumeCapabilities()); err != nil {
			// no space at all for volumes this driver cannot make
			return &csi.GetCapacityResponse{AvailableCapacity: 0, MaximumVolumeSize: wrapperspb.Int64(0)}, nil
		}
	}
	pool, err := c.client.PoolCapacity(ctx, volumePath)
	if errors.Is(err, routeros.ErrNotFound) {
		return nil, status.Errorf(codes.FailedPrecondition, "volumePath %s: %v; the first component of volumePath must be the mount point of a pool on the RDS (see /disk print where mount-point)", volumePath, err)
	}
	if err != nil {
		return nil, c.rdsStatus("read the free space of the pool holding "+volumePath, err)
	}
	c.recordPool(pool)
	free := max(pool.Free-c.cfg.CapacityReserve, 0)
	return &csi.GetCapacityResponse{AvailableCapacity: free, MaximumVolumeSize: wrapperspb.Int64(free)}, nil
}

// recordPool keeps the pool's figures for /metrics, which never asks the RDS itself.
func (c *controllerService) recordPool(p routeros.Pool) {
	c.metrics.poolSizeBytes.WithLabelValues(p.Name).Set(float64(p.Size))
	c.metrics.poolFreeBytes.WithLabelValues(p.Name).Set(float64(p.Free))
}

// refreshPools reads the pools of every volume directory, once each.
func (c *controllerService) refreshPools(ctx context.Context) {
	for _, b := range onePathPerPool(c.bases) {
		p, err := c.client.PoolCapacity(ctx, b)
		if err != nil {
			// the health loop reports an unreachable RDS; this is the detail
			c.log.Debug("cannot read pool capacity for metrics", "path", b, "err", err)
			continue
		}
		c.recordPool(p)
	}
}

// onePathPerPool keeps the first of paths on each pool, in order: the pool's capacity is
// the same from every path on it.
func onePathPerPool(paths []string) []string {
	var out []string
	seen := map[string]bool{}
	for _, p := range paths {
		if pool := routeros.PoolName(p); !seen[pool] {
			seen[pool] = true
			out = append(out, p)
		}
	}
	return out
}
