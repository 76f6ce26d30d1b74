package provisioner

import (
	"context"
	"fmt"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"

	"github.com/crossns/external-provisioner/pkg/inflight"
)

// Settle implements inflight.Settler: the claim of r is gone, so the volume
// its call made (if any) must go too.
func (p *Provisioner) Settle(ctx context.Context, r inflight.Record) error {
	defer p.claimLocks.Lock(r.ClaimUID)()
	_, err := p.settle(ctx, r.ClaimUID)
	return err
}

// settle ends the recorded call of a claim that will not get its volume: it
// asks the driver, with the same (idempotent) CreateVolume, what the call
// made, deletes it and removes the record. It returns the deleted volume's
// handle ("" when the driver made nothing). An error leaves the record in
// place: the driver is still busy or unreachable, and the caller tries again
// later. The caller holds the claim's lock.
//
// The repeat leaves out the data source: the claim is being settled because
// it may not have the data (a grant revoked, the claim or source gone), and
// the recorded call may never have reached the driver (the sidecar stopped
// between the record and the call; found by the soak). Without a source the
// driver either returns the volume the recorded call made (CSI spec,
// CreateVolume: a repeat is matched on name, capacity, capabilities and
// parameters) or makes an empty one — no copy of the source is ever made
// for a claim that may not have it. A driver that also matches the source
// answers AlreadyExists: the volume exists, so the exact repeat only
// returns it.
func (p *Provisioner) settle(ctx context.Context, uid types.UID) (string, error) {
	r, ok := p.Records.Get(uid)
	if !ok {
		return "", nil
	}
	logger := klog.FromContext(ctx)
	req := proto.Clone(r.Request).(*csi.CreateVolumeRequest)
	if r.SecretRef != nil {
		secrets, err := p.readSecret(ctx, r.SecretRef)
		switch {
		case apierrors.IsNotFound(err):
			// Without the secret the driver may refuse; try anyway rather
			// than keep a record nobody can end.
			logger.Info("Provisioner secret is gone; repeating CreateVolume without it", "secret", klog.KRef(r.SecretRef.Namespace, r.SecretRef.Name))
		case err != nil:
			return "", err
		default:
			req.Secrets = secrets
		}
	}
	probe := req
	if req.VolumeContentSource != nil {
		probe = proto.Clone(req).(*csi.CreateVolumeRequest)
		probe.VolumeContentSource = nil
	}
	resp, err := p.repeatCreate(ctx, probe)
	if status.Code(err) == codes.AlreadyExists && probe != req {
		// The driver matches sources too, and a volume of that name exists:
		// the recorded call made it. The exact repeat returns it.
		logger.V(2).Info("Repeated CreateVolume without its source answers AlreadyExists; repeating it as recorded", "volume", req.Name)
		resp, err = p.repeatCreate(ctx, req)
	}
	if err != nil {
		if createFailure(err, false) == inFlight {
			return "", fmt.Errorf("CreateVolume %q is still running in the driver: %w", req.Name, err)
		}
		if status.Code(err) == codes.AlreadyExists {
			// A volume of that name exists but does not match the call: it is
			// not ours to delete. Keep the record so an admin sees it.
			return "", fmt.Errorf("CreateVolume %q answers AlreadyExists to the recorded request; delete the volume by hand if no PV uses it: %w", req.Name, err)
		}
		// The driver refused the call: nothing was made under this name.
		logger.V(2).Info("Repeated CreateVolume refused; nothing to delete", "volume", req.Name, "err", err)
		p.Records.Remove(uid)
		return "", nil
	}
	id := resp.GetVolume().GetVolumeId()
	if id == "" {
		logger.Error(nil, "Driver answered CreateVolume without a volume; nothing to delete", "volume", req.Name)
		p.Records.Remove(uid)
		return "", nil
	}
	if err := p.deleteVolume(ctx, id, req.Secrets); err != nil {
		return "", fmt.Errorf("deleting volume %q that no PV will own: %w", id, err)
	}
	p.Records.Remove(uid)
	logger.Info("Deleted a volume that no PV will own", "volumeHandle", id, "volume", req.Name)
	return id, nil
}

// repeatCreate is one CreateVolume of settle, within the operation timeout.
func (p *Provisioner) repeatCreate(ctx context.Context, req *csi.CreateVolumeRequest) (*csi.CreateVolumeResponse, error) {
	cctx, cancel := context.WithTimeout(ctx, p.Timeout)
	defer cancel()
	return p.CSI.CreateVolume(cctx, req)
}

// discard deletes a volume the driver made that no PV will own (wrong size,
// source ignored, PV not buildable) and ends its record. On failure the
// record stays and finish settles it. It returns how the error message ends.
func (p *Provisioner) discard(ctx context.Context, uid types.UID, volumeID string, secrets map[string]string) string {
	if err := p.deleteVolume(ctx, volumeID, secrets); err != nil {
		klog.FromContext(ctx).Error(err, "Could not delete a volume that no PV owns; retrying", "volumeHandle", volumeID)
		return "deleting the volume failed and is retried"
	}
	p.Records.Remove(uid)
	return "the volume was deleted"
}
