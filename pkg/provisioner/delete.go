package provisioner

import (
	"context"
	"fmt"
	"sync"
	"time"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/klog/v2"
	"sigs.k8s.io/sig-storage-lib-external-provisioner/v10/controller"

	"github.com/crossns/external-provisioner/pkg/migration"
)

// ShouldDelete holds deletion back while a VolumeAttachment still uses the
// volume: deleting it under a node that has it attached corrupts data or
// fails in the backend.
func (p *Provisioner) ShouldDelete(ctx context.Context, pv *v1.PersistentVolume) bool {
	if pv.DeletionTimestamp != nil && p.deleted.has(pv.Name) {
		// The loop re-queues the PV on the update its own DELETE caused and
		// may still see it in its cache: DeleteVolume already succeeded and
		// the PV is on its way out, so another round would only repeat both.
		return false
	}
	if p.VolumeAttachments == nil {
		return true
	}
	vas, err := p.VolumeAttachments.List(labels.Everything())
	if err != nil {
		klog.FromContext(ctx).Error(err, "Listing VolumeAttachments; deletion postponed", "pv", pv.Name)
		return false
	}
	for _, va := range vas {
		if va.Spec.Source.PersistentVolumeName != nil && *va.Spec.Source.PersistentVolumeName == pv.Name {
			klog.FromContext(ctx).V(2).Info("Volume still attached; deletion postponed", "pv", pv.Name, "volumeAttachment", va.Name, "node", va.Spec.NodeName)
			return false
		}
	}
	return true
}

// Delete removes the backend volume of a PV this driver provisioned.
func (p *Provisioner) Delete(ctx context.Context, pv *v1.PersistentVolume) error {
	// A PV in the form of the in-tree plugin this driver replaces goes to
	// DeleteVolume with the handle the driver gave it.
	pv, migrated, err := p.Migration.ToCSI(klog.FromContext(ctx), pv)
	if err != nil {
		return err
	}
	if migrated {
		ctx = migration.Context(ctx, true)
	}
	if pv.Spec.CSI == nil || pv.Spec.CSI.Driver != p.DriverName {
		return &controller.IgnoredError{Reason: fmt.Sprintf("PV %s is not a volume of driver %s", pv.Name, p.DriverName)}
	}
	if done, err := p.deleteShared(ctx, pv); err != nil {
		return err
	} else if done {
		p.deleted.add(pv.Name)
		return nil
	}
	secrets, err := p.deletionSecrets(ctx, pv)
	if apierrors.IsNotFound(err) {
		// The secret went first (often with its namespace): waiting for it
		// would keep the PV Released and the volume in the backend for ever.
		// Ask the driver anyway, as upstream v6 does; it may not need it.
		klog.FromContext(ctx).Info("Deletion secret is gone; calling DeleteVolume without secrets", "pv", pv.Name, "err", err.Error())
		secrets, err = nil, nil
	}
	if err != nil {
		return err
	}
	if err := p.deleteVolume(ctx, pv.Spec.CSI.VolumeHandle, secrets); err != nil {
		return err
	}
	p.deleted.add(pv.Name)
	return nil
}

// deletedVolumes remembers, for a while, PVs whose backend volume this
// process deleted. Entries expire so the map stays small; by then the PV
// object is long gone.
type deletedVolumes struct {
	mu sync.Mutex
	at map[string]time.Time
}

const deletedVolumeMemory = 10 * time.Minute

func (d *deletedVolumes) add(pv string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	now := time.Now()
	for name, t := range d.at {
		if now.Sub(t) > deletedVolumeMemory {
			delete(d.at, name)
		}
	}
	d.at[pv] = now
}

func (d *deletedVolumes) has(pv string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	t, ok := d.at[pv]
	return ok && time.Since(t) <= deletedVolumeMemory
}

// deletionSecrets reads the secret recorded on the PV at provisioning (empty
// annotations, as the upstream sidecar writes them, record "no secret"). PVs
// from before that record fall back to the StorageClass, when it still
// exists; its claim templates resolve from the PV's claimRef, as upstream.
func (p *Provisioner) deletionSecrets(ctx context.Context, pv *v1.PersistentVolume) (map[string]string, error) {
	ref := &v1.SecretReference{Name: pv.Annotations[deletionSecretNameAnn], Namespace: pv.Annotations[deletionSecretNamespaceAnn]}
	_, recorded := pv.Annotations[deletionSecretNameAnn]
	if !recorded && pv.Spec.StorageClassName != "" {
		class, err := p.Client.StorageV1().StorageClasses().Get(ctx, pv.Spec.StorageClassName, metav1GetOptions)
		if apierrors.IsNotFound(err) {
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("reading StorageClass %q for the deletion secret of %s: %w", pv.Spec.StorageClassName, pv.Name, err)
		}
		if class, _, err = p.Migration.Class(klog.FromContext(ctx), class); err != nil {
			return nil, err
		}
		cp, err := parseClassParams(class.Parameters)
		if err != nil {
			return nil, err
		}
		tp := templateParams{pvName: pv.Name}
		if c := pv.Spec.ClaimRef; c != nil {
			// Name and namespace only: the claim may be gone, and its
			// annotations are never trusted for this secret.
			tp.claim = &v1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Name: c.Name, Namespace: c.Namespace}}
		}
		if ref, err = resolveSecretRef(cp, provisionerSecret, tp); err != nil || ref == nil {
			return nil, err
		}
	}
	if ref.Name == "" {
		return nil, nil
	}
	return p.readSecret(ctx, ref)
}
