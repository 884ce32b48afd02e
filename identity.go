package main

import (
	"context"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// identityService answers who we are and whether we are ready.
type identityService struct {
	csi.UnimplementedIdentityServer
	name, version string
	// controller is set when this process serves the Controller service; its readiness
	// (the RDS answered recently) is the process's readiness.
	controller interface{ ready() bool }
	// onlineExpansion is advertised once the controller supports ControllerExpandVolume.
	onlineExpansion bool
}

func (s *identityService) GetPluginInfo(context.Context, *csi.GetPluginInfoRequest) (*csi.GetPluginInfoResponse, error) {
	return &csi.GetPluginInfoResponse{Name: s.name, VendorVersion: s.version}, nil
}

func (s *identityService) GetPluginCapabilities(context.Context, *csi.GetPluginCapabilitiesRequest) (*csi.GetPluginCapabilitiesResponse, error) {
	var caps []*csi.PluginCapability
	if s.controller != nil {
		caps = append(caps, &csi.PluginCapability{Type: &csi.PluginCapability_Service_{
			Service: &csi.PluginCapability_Service{Type: csi.PluginCapability_Service_CONTROLLER_SERVICE}}})
	}
	if s.onlineExpansion {
		caps = append(caps, &csi.PluginCapability{Type: &csi.PluginCapability_VolumeExpansion_{
			VolumeExpansion: &csi.PluginCapability_VolumeExpansion{Type: csi.PluginCapability_VolumeExpansion_ONLINE}}})
	}
	return &csi.GetPluginCapabilitiesResponse{Capabilities: caps}, nil
}

// Probe reports ready when this process can do its job: for a controller, the RDS answered
// recently. Not ready is an answer, not an error, so a liveness probe never restart-loops
// the controller while the RDS is down.
func (s *identityService) Probe(context.Context, *csi.ProbeRequest) (*csi.ProbeResponse, error) {
	ready := true
	if s.controller != nil {
		ready = s.controller.ready()
	}
	return &csi.ProbeResponse{Ready: wrapperspb.Bool(ready)}, nil
}
