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
// repeats the same (idempotent) CreateVolume to learn what the driver made,
// deletes it and removes the record. It returns the deleted volume's handle
// ("" when the driver made nothing). An error leaves the record in place:
// the driver is still busy or unreachable, and the caller tries again later.
// The caller holds the claim's lock.
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
	cctx, cancel := context.WithTimeout(ctx, p.Timeout)
	resp, err := p.CSI.CreateVolume(cctx, req)
	cancel()
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
