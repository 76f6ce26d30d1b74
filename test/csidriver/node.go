package csidriver

import (
	"context"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// nodeServer is deliberately minimal: nothing ever publishes a volume, since
// there is no kubelet. It exists because generic tools (csi-sanity's
// resource cleanup in particular) call NodeGetCapabilities and
// NodeUnpublishVolume on every endpoint and treat Unimplemented as failure.
// All other Node RPCs stay Unimplemented.
type nodeServer struct {
	csi.UnimplementedNodeServer
	d *Driver
}

func (s *nodeServer) NodeGetCapabilities(context.Context, *csi.NodeGetCapabilitiesRequest) (*csi.NodeGetCapabilitiesResponse, error) {
	return &csi.NodeGetCapabilitiesResponse{}, nil
}

func (s *nodeServer) NodeGetInfo(context.Context, *csi.NodeGetInfoRequest) (*csi.NodeGetInfoResponse, error) {
	resp := &csi.NodeGetInfoResponse{NodeId: s.d.cfg.NodeID}
	if len(s.d.cfg.Topology) > 0 {
		resp.AccessibleTopology = &csi.Topology{Segments: s.d.cfg.Topology}
	}
	return resp, nil
}

// NodeUnpublishVolume succeeds for existing volumes because a volume that
// was never published is trivially unpublished.
func (s *nodeServer) NodeUnpublishVolume(_ context.Context, req *csi.NodeUnpublishVolumeRequest) (*csi.NodeUnpublishVolumeResponse, error) {
	if req.GetVolumeId() == "" || req.GetTargetPath() == "" {
		return nil, status.Error(codes.InvalidArgument, "volume_id and target_path are required")
	}
	if _, ok := s.d.store.getVolume(s.d.storeVolumeID(req.GetVolumeId())); !ok {
		return nil, status.Errorf(codes.NotFound, "volume %q not found", req.GetVolumeId())
	}
	return &csi.NodeUnpublishVolumeResponse{}, nil
}
