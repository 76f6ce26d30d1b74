package provisioner

import (
	"context"
	"fmt"
	"maps"

	"github.com/container-storage-interface/spec/lib/go/csi"
	v1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/klog/v2"
)

// volumeAttributesClass returns the VolumeAttributesClass (KEP-3751,
// storage.k8s.io/v1 since Kubernetes 1.34) a claim names in
// spec.volumeAttributesClassName, checked for this driver; nil when the
// claim names none or the feature is off (VolumeAttributesClasses nil), in
// which case the field is ignored, as upstream external-provisioner v6.3.0
// does with its VolumeAttributesClass gate off.
//
// The rules are upstream v6.3.0's (pkg/controller/controller.go,
// prepareProvision and checkDriverCapabilities):
//   - the driver must report the MODIFY_VOLUME controller capability: the CSI
//     spec lets CreateVolume carry mutable_parameters only then;
//   - the class's driverName must be this driver;
//   - a class that cannot be read is retried (it may be created later).
//
// The error says what to fix; the provision loop records it on the claim as
// a ProvisioningFailed Event. Kinds: a refusal needs a user's fix (invalid);
// a missing or unreadable class decides nothing (transient), so a CreateVolume
// recorded in flight stays in flight.
func (p *Provisioner) volumeAttributesClass(ctx context.Context, claim *v1.PersistentVolumeClaim) (*storagev1.VolumeAttributesClass, error) {
	name := ""
	if claim.Spec.VolumeAttributesClassName != nil {
		name = *claim.Spec.VolumeAttributesClassName
	}
	if name == "" || p.VolumeAttributesClasses == nil {
		return nil, nil
	}
	if !p.ControllerCaps[csi.ControllerServiceCapability_RPC_MODIFY_VOLUME] {
		return nil, fail(invalid, fmt.Errorf("the claim names VolumeAttributesClass %q, but CSI driver %s does not support VolumeAttributesClasses "+
			"(it does not report the controller MODIFY_VOLUME capability): remove spec.volumeAttributesClassName or use a StorageClass of a driver that supports it",
			name, p.DriverName))
	}
	vac, err := p.getVolumeAttributesClass(ctx, name)
	if apierrors.IsNotFound(err) {
		return nil, fail(transient, fmt.Errorf("VolumeAttributesClass %q named by the claim does not exist; "+
			"provisioning is retried until it is created (or spec.volumeAttributesClassName is changed): %w", name, err))
	}
	if err != nil {
		return nil, fail(transient, fmt.Errorf("reading VolumeAttributesClass %q: %w", name, err))
	}
	if vac.DriverName != p.DriverName {
		return nil, fail(invalid, fmt.Errorf("VolumeAttributesClass %q is for CSI driver %q, but the claim's StorageClass provisions with %q: "+
			"name a VolumeAttributesClass of driver %q", name, vac.DriverName, p.DriverName, p.DriverName))
	}
	klog.FromContext(ctx).V(4).Info("Using VolumeAttributesClass", "volumeAttributesClass", name, "mutableParameters", len(vac.Parameters))
	return vac, nil
}

// getVolumeAttributesClass reads a class from the informer cache and, when
// the cache does not have it, from kube-apiserver: a class created just
// before the claim may not be in the cache yet, and under RBAC that grants
// only "get" on volumeattributesclasses (no list/watch) the cache stays
// empty. A miss costs one GET per attempt of that claim (attempts back off).
func (p *Provisioner) getVolumeAttributesClass(ctx context.Context, name string) (*storagev1.VolumeAttributesClass, error) {
	vac, err := p.VolumeAttributesClasses.Get(name)
	if err == nil {
		return vac, nil
	}
	if !apierrors.IsNotFound(err) || p.Client == nil {
		return nil, err
	}
	return p.Client.StorageV1().VolumeAttributesClasses().Get(ctx, name, metav1GetOptions)
}

// mutableParameters are the class's parameters for CreateVolume's
// mutable_parameters; a copy, since the class comes from a shared cache and
// the request is kept in the in-flight record.
func mutableParameters(vac *storagev1.VolumeAttributesClass) map[string]string {
	if vac == nil {
		return nil
	}
	return maps.Clone(vac.Parameters)
}
