package provisioner

import (
	"context"
	"fmt"

	v1 "k8s.io/api/core/v1"
	"k8s.io/klog/v2"
	"sigs.k8s.io/sig-storage-lib-external-provisioner/v10/controller"
)

// Sharer binds claims to a volume that already exists instead of creating
// one (pkg/sharing: live sharing, issue 11), and tells deletion which PVs
// share a volume. main always wires it, also with the
// CrossNamespaceVolumeSharing gate off: a share-from claim is then refused
// rather than given an empty volume, and PVs shared earlier are still never
// deleted under their subordinates.
type Sharer interface {
	// Requested reports whether the claim asks to share a volume.
	Requested(claim *v1.PersistentVolumeClaim) bool
	// Share returns the subordinate PV (named pvName) binding claim to the
	// volume it asks for, or an error: *sharing.Error when refused (typed
	// by kindOf), anything else transient.
	Share(ctx context.Context, claim *v1.PersistentVolumeClaim, pvName string) (*v1.PersistentVolume, error)
	// Subordinate reports whether pv shares a volume another PV owns.
	Subordinate(pv *v1.PersistentVolume) bool
	// SharedWith names the other PVs with pv's volume handle.
	SharedWith(pv *v1.PersistentVolume) ([]string, error)
}

// provisionShared is Provision for a claim that asks to share a volume:
// no CreateVolume, no record, no topology; the Sharer decides and builds
// the PV. Refusals go through finish like any other failure.
func (p *Provisioner) provisionShared(ctx context.Context, opts controller.ProvisionOptions) (*v1.PersistentVolume, controller.ProvisioningState, error) {
	claim := opts.PVC
	pv, err := p.Sharer.Share(ctx, claim, opts.PVName)
	if err != nil {
		state, err := p.finishShare(ctx, claim, err)
		return nil, state, err
	}
	return pv, controller.ProvisioningFinished, nil
}

// finishShare is finish for a share: it never has a call in flight.
func (p *Provisioner) finishShare(ctx context.Context, claim *v1.PersistentVolumeClaim, err error) (controller.ProvisioningState, error) {
	f := kindOf(err)
	switch f.kind {
	case refused, undecided, unsupported:
		klog.FromContext(ctx).V(2).Info("Share refused", "reason", f.reason, "message", f.err.Error())
		p.Recorder.Event(claim, v1.EventTypeWarning, f.reason, f.err.Error())
		if f.kind != unsupported {
			p.Metrics.ObserveDenial(f.denial)
		}
		return controller.ProvisioningFinished, &controller.IgnoredError{Reason: f.err.Error()}
	}
	return controller.ProvisioningNoChange, err
}

// deleteShared decides deletion for PVs that share a volume. A subordinate
// is deleted without DeleteVolume (done: true): the volume is its source's.
// A volume other PVs still use is not deleted: the error makes the
// provision loop retry with backoff (and send a VolumeFailedDelete Event
// naming them) — the DeletionGuard's "false" would not be retried until the
// next resync. Normally the source claim's finalizer keeps this PV bound
// until its subordinates are gone; this guard covers a finalizer removed by
// hand, a PV deleted directly and a PV of the same handle made by an admin.
func (p *Provisioner) deleteShared(ctx context.Context, pv *v1.PersistentVolume) (done bool, err error) {
	if p.Sharer == nil {
		return false, nil
	}
	if p.Sharer.Subordinate(pv) {
		klog.FromContext(ctx).V(2).Info("Deleting a PV that shares another PV's volume: the volume stays", "pv", pv.Name, "volumeHandle", pv.Spec.CSI.VolumeHandle)
		return true, nil
	}
	others, err := p.Sharer.SharedWith(pv)
	if err != nil {
		return false, fmt.Errorf("not deleting volume %s of PV %s: cannot tell whether other PVs share it: %w", pv.Spec.CSI.VolumeHandle, pv.Name, err)
	}
	if len(others) > 0 {
		return false, fmt.Errorf("not deleting volume %s of PV %s: PersistentVolumes %v still use it (shared); it is deleted once they are gone",
			pv.Spec.CSI.VolumeHandle, pv.Name, others)
	}
	return false, nil
}
