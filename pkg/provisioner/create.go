package provisioner

import (
	"context"
	"fmt"
	"sync"

	"github.com/container-storage-interface/spec/lib/go/csi"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"
	"sigs.k8s.io/sig-storage-lib-external-provisioner/v10/controller"

	"github.com/crossns/external-provisioner/pkg/datasource"
	"github.com/crossns/external-provisioner/pkg/events"
)

// inflight remembers CreateVolume requests that the driver may still be
// working on (the call timed out or the driver was unavailable). If the
// grant that allowed one is revoked before the driver answers, the sidecar
// must finish that request to learn the volume it made, then delete it:
// otherwise a backend volume would exist that no PV owns.
type inflight struct {
	mu  sync.Mutex
	req map[types.UID]*csi.CreateVolumeRequest
}

func newInflight() inflight { return inflight{req: map[types.UID]*csi.CreateVolumeRequest{}} }

func (f *inflight) set(uid types.UID, req *csi.CreateVolumeRequest) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.req[uid] = req
}

func (f *inflight) clear(uid types.UID) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.req, uid)
}

func (f *inflight) get(uid types.UID) *csi.CreateVolumeRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.req[uid]
}

// createVolume calls the driver and classifies failures. The request is
// remembered while its outcome is unknown.
func (p *Provisioner) createVolume(ctx context.Context, claim *v1.PersistentVolumeClaim, req *csi.CreateVolumeRequest, nodeSelected bool) (*csi.CreateVolumeResponse, controller.ProvisioningState, error) {
	p.inflight.set(claim.UID, req)
	cctx, cancel := context.WithTimeout(ctx, p.Timeout)
	resp, err := p.CSI.CreateVolume(cctx, req)
	cancel()
	if err != nil {
		state := createState(err, nodeSelected)
		if state != controller.ProvisioningInBackground {
			p.inflight.clear(claim.UID)
		}
		return nil, state, fmt.Errorf("CreateVolume %q: %w", req.Name, err)
	}
	p.inflight.clear(claim.UID)
	if resp.GetVolume() == nil || resp.Volume.VolumeId == "" {
		return nil, controller.ProvisioningFinished, fmt.Errorf("CreateVolume %q: driver returned no volume", req.Name)
	}
	if req.VolumeContentSource != nil && resp.Volume.ContentSource == nil {
		// A driver that ignores the source returns an empty volume the user
		// would take for a copy.
		p.cleanup(ctx, claim, resp.Volume.VolumeId, req.Secrets)
		return nil, controller.ProvisioningFinished, fmt.Errorf("driver created volume %q without the requested data source; it was deleted", resp.Volume.VolumeId)
	}
	if _, err := checkCapacity(req.CapacityRange.RequiredBytes, resp.Volume.CapacityBytes); err != nil {
		p.cleanup(ctx, claim, resp.Volume.VolumeId, req.Secrets)
		return nil, controller.ProvisioningFinished, fmt.Errorf("%w; the volume was deleted", err)
	}
	return resp, controller.ProvisioningFinished, nil
}

// revokedInFlight handles a denial for a claim whose CreateVolume may still
// be running under the grant that was just revoked. It repeats the same
// (idempotent) request to learn what the driver made and deletes it. done is
// false when there was nothing in flight.
func (p *Provisioner) revokedInFlight(ctx context.Context, claim *v1.PersistentVolumeClaim, de *datasource.Error) (done bool, state controller.ProvisioningState, err error) {
	req := p.inflight.get(claim.UID)
	if req == nil {
		return false, "", nil
	}
	logger := klog.FromContext(ctx)
	cctx, cancel := context.WithTimeout(ctx, p.Timeout)
	resp, cerr := p.CSI.CreateVolume(cctx, req)
	cancel()
	if cerr != nil {
		if createState(cerr, false) == controller.ProvisioningInBackground {
			return true, controller.ProvisioningInBackground, fmt.Errorf("access was revoked (%s) while CreateVolume %q was in progress; waiting for the driver to finish so the volume can be deleted: %w", de.Message, req.Name, cerr)
		}
		p.inflight.clear(claim.UID) // the driver made nothing
		return false, "", nil
	}
	id := resp.GetVolume().GetVolumeId()
	if id == "" {
		// A success that names no volume leaves nothing to delete.
		logger.Error(nil, "Driver answered CreateVolume without a volume", "name", req.Name)
		p.inflight.clear(claim.UID)
		return false, "", nil
	}
	if err := p.deleteVolume(ctx, id, req.Secrets); err != nil {
		return true, controller.ProvisioningInBackground, fmt.Errorf("deleting volume %q created before access was revoked: %w", id, err)
	}
	p.inflight.clear(claim.UID)
	msg := fmt.Sprintf("access to the data source was revoked while its volume was being created; the volume %q was deleted and nothing was provisioned. %s", id, de.Message)
	logger.Info("Deleted volume created before its grant was revoked", "volumeHandle", id)
	p.Recorder.Event(claim, v1.EventTypeWarning, events.ReferenceGrantRevoked, msg)
	p.Metrics.ObserveDenial("revoked_in_flight")
	return true, controller.ProvisioningFinished, &controller.IgnoredError{Reason: msg}
}

// cleanup deletes a volume the driver made but no PV will own. Failure is
// logged loudly: the admin may have to remove it by hand.
func (p *Provisioner) cleanup(ctx context.Context, claim *v1.PersistentVolumeClaim, volumeID string, secrets map[string]string) {
	if err := p.deleteVolume(ctx, volumeID, secrets); err != nil {
		klog.FromContext(ctx).Error(err, "Could not delete a volume that no PV owns; delete it in the storage backend", "volumeHandle", volumeID, "claim", klog.KObj(claim))
	}
}

func (p *Provisioner) deleteVolume(ctx context.Context, volumeID string, secrets map[string]string) error {
	cctx, cancel := context.WithTimeout(ctx, p.Timeout)
	defer cancel()
	if _, err := p.CSI.DeleteVolume(cctx, &csi.DeleteVolumeRequest{VolumeId: volumeID, Secrets: secrets}); err != nil {
		return fmt.Errorf("DeleteVolume %q: %w", volumeID, err)
	}
	return nil
}
