package main

import (
	"context"
	"log/slog"

	"github.com/container-storage-interface/spec/lib/go/csi"
)

// nodeService is the CSI Node service. Staging and publishing arrive with issue 6.
type nodeService struct {
	csi.UnimplementedNodeServer
	cfg *Config
	log *slog.Logger
}

func newNodeService(cfg *Config, log *slog.Logger, _ *metrics) (*nodeService, error) {
	return &nodeService{cfg: cfg, log: log}, nil
}

func (n *nodeService) NodeGetInfo(context.Context, *csi.NodeGetInfoRequest) (*csi.NodeGetInfoResponse, error) {
	return &csi.NodeGetInfoResponse{NodeId: n.cfg.NodeID}, nil
}

func (n *nodeService) run(context.Context) {}
func (n *nodeService) close()              {}
