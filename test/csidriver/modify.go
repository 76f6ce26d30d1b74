package csidriver

import (
	"context"
	"fmt"
	"slices"
	"sort"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// MutableParameterKeys are the mutable parameters the driver knows, in
// CreateVolume (a claim's VolumeAttributesClass parameters) and in
// ControllerModifyVolume. The driver only records them on the volume: a
// directory has no IOPS. Values are opaque.
var MutableParameterKeys = []string{"iops", "throughput"}

// checkMutableParameters refuses keys the driver does not know. The CSI spec
// leaves parsing and validating them to the plugin, and csi-sanity expects
// InvalidArgument for an unknown one, in CreateVolume and
// ControllerModifyVolume alike.
func checkMutableParameters(params map[string]string) error {
	var unknown []string
	for k := range params {
		if !slices.Contains(MutableParameterKeys, k) {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		return fmt.Errorf("mutable_parameters %v are not supported (supported: %v)", unknown, MutableParameterKeys)
	}
	return nil
}

// ControllerModifyVolume stores the given mutable parameters on the volume.
// It exists because the driver reports MODIFY_VOLUME, which CreateVolume's
// mutable_parameters require (CSI spec); external-resizer would call it when
// a claim's VolumeAttributesClass changes.
func (s *controllerServer) ControllerModifyVolume(_ context.Context, req *csi.ControllerModifyVolumeRequest) (*csi.ControllerModifyVolumeResponse, error) {
	if req.GetVolumeId() == "" {
		return nil, status.Error(codes.InvalidArgument, "volume_id is required")
	}
	if len(req.GetMutableParameters()) == 0 {
		return nil, status.Error(codes.InvalidArgument, "mutable_parameters are required")
	}
	if err := checkMutableParameters(req.GetMutableParameters()); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if _, err := s.d.store.modifyVolume(s.d.storeVolumeID(req.GetVolumeId()), req.GetMutableParameters()); err != nil {
		return nil, err
	}
	return &csi.ControllerModifyVolumeResponse{}, nil
}
