package csidriver

import (
	"context"
	"fmt"
	"maps"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

type controllerServer struct {
	csi.UnimplementedControllerServer
	d *Driver
}

// controllerCaps deliberately omits PUBLISH_UNPUBLISH_VOLUME: there is no
// attacher in the test bed, and volumes need no attaching to be "used".
// MODIFY_VOLUME lets claims name a VolumeAttributesClass (modify.go).
var controllerCaps = []csi.ControllerServiceCapability_RPC_Type{
	csi.ControllerServiceCapability_RPC_CREATE_DELETE_VOLUME,
	csi.ControllerServiceCapability_RPC_CREATE_DELETE_SNAPSHOT,
	csi.ControllerServiceCapability_RPC_LIST_SNAPSHOTS,
	csi.ControllerServiceCapability_RPC_CLONE_VOLUME,
	csi.ControllerServiceCapability_RPC_GET_CAPACITY,
	csi.ControllerServiceCapability_RPC_MODIFY_VOLUME,
}

func (s *controllerServer) ControllerGetCapabilities(context.Context, *csi.ControllerGetCapabilitiesRequest) (*csi.ControllerGetCapabilitiesResponse, error) {
	resp := &csi.ControllerGetCapabilitiesResponse{}
	for _, t := range controllerCaps {
		resp.Capabilities = append(resp.Capabilities, &csi.ControllerServiceCapability{
			Type: &csi.ControllerServiceCapability_Rpc{Rpc: &csi.ControllerServiceCapability_RPC{Type: t}},
		})
	}
	return resp, nil
}

func (s *controllerServer) CreateVolume(_ context.Context, req *csi.CreateVolumeRequest) (*csi.CreateVolumeResponse, error) {
	if req.GetName() == "" {
		return nil, status.Error(codes.InvalidArgument, "name is required")
	}
	accessType, err := checkCapabilities(req.GetVolumeCapabilities())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	required, limit := req.GetCapacityRange().GetRequiredBytes(), req.GetCapacityRange().GetLimitBytes()
	if required < 0 || limit < 0 {
		return nil, status.Errorf(codes.InvalidArgument, "negative capacity range %d..%d", required, limit)
	}
	if limit > 0 && required > limit {
		return nil, status.Errorf(codes.InvalidArgument, "required_bytes %d exceeds limit_bytes %d", required, limit)
	}
	ours := s.d.cfg.Topology
	if len(ours) > 0 && !topologyAllowed(req.GetAccessibilityRequirements(), ours) {
		// RESOURCE_EXHAUSTED is what the spec prescribes for "unable to
		// provision in accessible_topology"; the provisioner reschedules.
		return nil, status.Errorf(codes.ResourceExhausted, "volume %q: none of the requested topologies matches this driver's %v", req.GetName(), ours)
	}
	source, err := contentSource(req.GetVolumeContentSource(), s.d.storeVolumeID)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if err := checkMutableParameters(req.GetMutableParameters()); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}

	v, err := s.d.store.createVolume(volumeSpec{
		Name:              req.GetName(),
		RequiredBytes:     required,
		LimitBytes:        limit,
		AccessType:        accessType,
		Parameters:        req.GetParameters(),
		MutableParameters: req.GetMutableParameters(),
		Source:            source,
		Topology:          ours,
	})
	if err != nil {
		return nil, err
	}
	return &csi.CreateVolumeResponse{Volume: s.csiVolume(v)}, nil
}

func (s *controllerServer) csiVolume(v *Volume) *csi.Volume {
	out := &csi.Volume{
		VolumeId:      s.d.volumeID(v.ID),
		CapacityBytes: v.CapacityBytes,
		VolumeContext: map[string]string{"path": s.d.store.volumeDir(v.ID)},
	}
	switch {
	case v.Source == nil:
	case v.Source.SnapshotID != "":
		out.ContentSource = &csi.VolumeContentSource{Type: &csi.VolumeContentSource_Snapshot{
			Snapshot: &csi.VolumeContentSource_SnapshotSource{SnapshotId: v.Source.SnapshotID},
		}}
	case v.Source.VolumeID != "":
		out.ContentSource = &csi.VolumeContentSource{Type: &csi.VolumeContentSource_Volume{
			Volume: &csi.VolumeContentSource_VolumeSource{VolumeId: s.d.volumeID(v.Source.VolumeID)},
		}}
	}
	if len(v.Topology) > 0 {
		out.AccessibleTopology = []*csi.Topology{{Segments: maps.Clone(v.Topology)}}
	}
	return out
}

func contentSource(src *csi.VolumeContentSource, volumeID func(string) string) (*Source, error) {
	if src == nil {
		return nil, nil
	}
	switch t := src.GetType().(type) {
	case *csi.VolumeContentSource_Snapshot:
		if t.Snapshot.GetSnapshotId() == "" {
			return nil, fmt.Errorf("volume_content_source.snapshot.snapshot_id is required")
		}
		return &Source{SnapshotID: t.Snapshot.GetSnapshotId()}, nil
	case *csi.VolumeContentSource_Volume:
		if t.Volume.GetVolumeId() == "" {
			return nil, fmt.Errorf("volume_content_source.volume.volume_id is required")
		}
		return &Source{VolumeID: volumeID(t.Volume.GetVolumeId())}, nil
	default:
		return nil, fmt.Errorf("unsupported volume_content_source type %T", t)
	}
}

// checkCapabilities validates CreateVolume's capabilities and returns the
// access type they agree on.
func checkCapabilities(caps []*csi.VolumeCapability) (string, error) {
	if len(caps) == 0 {
		return "", fmt.Errorf("volume_capabilities are required")
	}
	accessType := ""
	for i, c := range caps {
		t, err := checkCapability(c)
		if err != nil {
			return "", fmt.Errorf("volume_capabilities[%d]: %w", i, err)
		}
		if accessType != "" && t != accessType {
			return "", fmt.Errorf("volume_capabilities mix %s and %s access", accessType, t)
		}
		accessType = t
	}
	return accessType, nil
}

// checkCapability accepts every defined access mode: a directory has no
// attachment semantics that would rule any of them out.
func checkCapability(c *csi.VolumeCapability) (string, error) {
	mode := c.GetAccessMode().GetMode()
	if _, known := csi.VolumeCapability_AccessMode_Mode_name[int32(mode)]; !known || mode == csi.VolumeCapability_AccessMode_UNKNOWN {
		return "", fmt.Errorf("access_mode %v is not supported", mode)
	}
	switch c.GetAccessType().(type) {
	case *csi.VolumeCapability_Mount:
		return AccessTypeMount, nil
	case *csi.VolumeCapability_Block:
		return AccessTypeBlock, nil
	default:
		return "", fmt.Errorf("access_type (mount or block) is required")
	}
}

// topologyAllowed reports whether ours satisfies the requirement: some
// requisite topology (or, without requisites, some preferred one) must have
// all of its segments equal to ours.
func topologyAllowed(req *csi.TopologyRequirement, ours map[string]string) bool {
	candidates := req.GetRequisite()
	if len(candidates) == 0 {
		candidates = req.GetPreferred()
	}
	if len(candidates) == 0 {
		return true
	}
	for _, t := range candidates {
		if segmentsMatch(t.GetSegments(), ours) {
			return true
		}
	}
	return false
}

func segmentsMatch(want, ours map[string]string) bool {
	for k, v := range want {
		if got, ok := ours[k]; !ok || got != v {
			return false
		}
	}
	return true
}

func (s *controllerServer) DeleteVolume(_ context.Context, req *csi.DeleteVolumeRequest) (*csi.DeleteVolumeResponse, error) {
	if req.GetVolumeId() == "" {
		return nil, status.Error(codes.InvalidArgument, "volume_id is required")
	}
	if err := s.d.store.deleteVolume(s.d.storeVolumeID(req.GetVolumeId())); err != nil {
		return nil, err
	}
	return &csi.DeleteVolumeResponse{}, nil
}

func (s *controllerServer) ValidateVolumeCapabilities(_ context.Context, req *csi.ValidateVolumeCapabilitiesRequest) (*csi.ValidateVolumeCapabilitiesResponse, error) {
	if req.GetVolumeId() == "" {
		return nil, status.Error(codes.InvalidArgument, "volume_id is required")
	}
	if len(req.GetVolumeCapabilities()) == 0 {
		return nil, status.Error(codes.InvalidArgument, "volume_capabilities are required")
	}
	v, ok := s.d.store.getVolume(s.d.storeVolumeID(req.GetVolumeId()))
	if !ok {
		return nil, status.Errorf(codes.NotFound, "volume %q not found", req.GetVolumeId())
	}
	for i, c := range req.GetVolumeCapabilities() {
		t, err := checkCapability(c)
		if err != nil {
			return &csi.ValidateVolumeCapabilitiesResponse{Message: fmt.Sprintf("volume_capabilities[%d]: %v", i, err)}, nil
		}
		if t != v.AccessType {
			return &csi.ValidateVolumeCapabilitiesResponse{
				Message: fmt.Sprintf("volume_capabilities[%d]: volume was created for %s access, not %s", i, v.AccessType, t),
			}, nil
		}
	}
	if len(req.GetParameters()) > 0 && !maps.Equal(req.GetParameters(), v.Parameters) {
		return &csi.ValidateVolumeCapabilitiesResponse{Message: "parameters differ from those the volume was created with"}, nil
	}
	return &csi.ValidateVolumeCapabilitiesResponse{
		Confirmed: &csi.ValidateVolumeCapabilitiesResponse_Confirmed{
			VolumeContext:      req.GetVolumeContext(),
			VolumeCapabilities: req.GetVolumeCapabilities(),
			Parameters:         req.GetParameters(),
		},
	}, nil
}

func (s *controllerServer) GetCapacity(_ context.Context, req *csi.GetCapacityRequest) (*csi.GetCapacityResponse, error) {
	avail := s.d.store.availableBytes()
	ours := s.d.cfg.Topology
	if t := req.GetAccessibleTopology(); t != nil && len(ours) > 0 && !segmentsMatch(t.GetSegments(), ours) {
		// Nothing of ours is reachable from that topology.
		avail = 0
	}
	return &csi.GetCapacityResponse{
		AvailableCapacity: avail,
		MaximumVolumeSize: wrapperspb.Int64(avail),
	}, nil
}

func (s *controllerServer) CreateSnapshot(_ context.Context, req *csi.CreateSnapshotRequest) (*csi.CreateSnapshotResponse, error) {
	if req.GetName() == "" {
		return nil, status.Error(codes.InvalidArgument, "name is required")
	}
	if req.GetSourceVolumeId() == "" {
		return nil, status.Error(codes.InvalidArgument, "source_volume_id is required")
	}
	sn, err := s.d.store.createSnapshot(req.GetName(), s.d.storeVolumeID(req.GetSourceVolumeId()), req.GetParameters())
	if err != nil {
		return nil, err
	}
	return &csi.CreateSnapshotResponse{Snapshot: s.csiSnapshot(sn)}, nil
}

func (s *controllerServer) csiSnapshot(sn *Snapshot) *csi.Snapshot {
	return &csi.Snapshot{
		SnapshotId:     sn.ID,
		SourceVolumeId: s.d.volumeID(sn.SourceVolumeID),
		SizeBytes:      sn.SizeBytes,
		CreationTime:   timestamppb.New(sn.CreationTime),
		ReadyToUse:     sn.ReadyToUse,
	}
}

func (s *controllerServer) DeleteSnapshot(_ context.Context, req *csi.DeleteSnapshotRequest) (*csi.DeleteSnapshotResponse, error) {
	if req.GetSnapshotId() == "" {
		return nil, status.Error(codes.InvalidArgument, "snapshot_id is required")
	}
	if err := s.d.store.deleteSnapshot(req.GetSnapshotId()); err != nil {
		return nil, err
	}
	return &csi.DeleteSnapshotResponse{}, nil
}

// ListSnapshots pages through snapshots ordered by ID. The token is the ID of
// the last entry returned, so deleting entries between pages neither skips
// nor repeats the remaining ones.
func (s *controllerServer) ListSnapshots(_ context.Context, req *csi.ListSnapshotsRequest) (*csi.ListSnapshotsResponse, error) {
	if req.GetMaxEntries() < 0 {
		return nil, status.Errorf(codes.InvalidArgument, "negative max_entries %d", req.GetMaxEntries())
	}
	token := req.GetStartingToken()
	if token != "" && !validID(token) {
		return nil, status.Errorf(codes.Aborted, "invalid starting_token %q", token)
	}

	var entries []*csi.ListSnapshotsResponse_Entry
	for _, sn := range s.d.store.listSnapshots() {
		if id := req.GetSnapshotId(); id != "" && sn.ID != id {
			continue
		}
		if src := req.GetSourceVolumeId(); src != "" && sn.SourceVolumeID != s.d.storeVolumeID(src) {
			continue
		}
		if token != "" && sn.ID <= token {
			continue
		}
		entries = append(entries, &csi.ListSnapshotsResponse_Entry{Snapshot: s.csiSnapshot(sn)})
	}

	resp := &csi.ListSnapshotsResponse{Entries: entries}
	if n := int(req.GetMaxEntries()); n > 0 && len(entries) > n {
		resp.Entries = entries[:n]
		resp.NextToken = entries[n-1].GetSnapshot().GetSnapshotId()
	}
	return resp, nil
}
