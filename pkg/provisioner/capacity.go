package provisioner

import (
	"context"
	"fmt"

	"github.com/container-storage-interface/spec/lib/go/csi"
	v1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/klog/v2"
)

// HasCapacity reports whether the driver has room now for the claim's
// volume on node: GetCapacity with the parameters, capabilities and each
// requisite segment CreateVolume would get, as upstream asks it before a
// node's instance selects its node for a claim (pkg/nodedeployment). A
// driver without GET_CAPACITY is assumed to have room.
func (p *Provisioner) HasCapacity(ctx context.Context, claim *v1.PersistentVolumeClaim, class *storagev1.StorageClass, node *v1.Node) (bool, error) {
	if !p.ControllerCaps[csi.ControllerServiceCapability_RPC_GET_CAPACITY] {
		return true, nil
	}
	class, _, err := p.Migration.Class(klog.FromContext(ctx), class)
	if err != nil {
		return false, err
	}
	req, _, err := p.buildRequest(claim, class, "pvc-"+string(claim.UID))
	if err != nil {
		return false, err
	}
	segments := []*csi.Topology{nil}
	if p.Topology != nil && p.PluginCaps[csi.PluginCapability_Service_VOLUME_ACCESSIBILITY_CONSTRAINTS] {
		reqs, err := p.Topology.Requirements(class, node, claim.Name)
		if err != nil {
			return false, fmt.Errorf("topology: %w", err)
		}
		if len(reqs.GetRequisite()) > 0 {
			segments = reqs.Requisite
		}
	}
	for _, segment := range segments {
		cctx, cancel := context.WithTimeout(ctx, p.Timeout)
		resp, err := p.CSI.GetCapacity(cctx, &csi.GetCapacityRequest{
			VolumeCapabilities: req.VolumeCapabilities, Parameters: req.Parameters, AccessibleTopology: segment})
		cancel()
		if err != nil {
			return false, fmt.Errorf("GetCapacity: %w", err)
		}
		if req.CapacityRange.RequiredBytes <= resp.AvailableCapacity {
			return true, nil
		}
	}
	return false, nil
}
