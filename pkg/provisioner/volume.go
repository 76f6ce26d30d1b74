package provisioner

import (
	"context"
	"maps"

	"github.com/container-storage-interface/spec/lib/go/csi"
	v1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/crossns/external-provisioner/pkg/datasource"
	"github.com/crossns/external-provisioner/pkg/events"
	"github.com/crossns/external-provisioner/pkg/topology"
)

var metav1GetOptions = metav1.GetOptions{}

const (
	// IdentityAttribute marks a PV's volume attributes with the sidecar
	// instance that created it.
	IdentityAttribute = "storage.kubernetes.io/csiProvisionerIdentity"

	// Provenance annotations on a PV provisioned from a data source: source
	// owners and auditors can see where a copy came from and under which
	// grant, long after the claim's Events expired.
	SourceNamespaceAnnotation = "provisioner.crossns.io/source-namespace"
	SourceKindAnnotation      = "provisioner.crossns.io/source-kind"
	SourceNameAnnotation      = "provisioner.crossns.io/source-name"
	ReferenceGrantAnnotation  = "provisioner.crossns.io/reference-grant"
)

// buildVolume makes the PV for a created volume. The provision loop adds the
// claim reference, class name and its own annotations.
func (p *Provisioner) buildVolume(_ context.Context, claim *v1.PersistentVolumeClaim, class *storagev1.StorageClass, pvName string,
	refs secretRefs, req *csi.CreateVolumeRequest, vol *csi.Volume, src *datasource.Source) (*v1.PersistentVolume, error) {
	capacity, err := checkCapacity(req.CapacityRange.RequiredBytes, vol.CapacityBytes)
	if err != nil {
		return nil, err
	}
	attrs := maps.Clone(vol.VolumeContext)
	if attrs == nil {
		attrs = map[string]string{}
	}
	attrs[IdentityAttribute] = p.Identity

	csiSource := &v1.CSIPersistentVolumeSource{
		Driver:                     p.DriverName,
		VolumeHandle:               vol.VolumeId,
		VolumeAttributes:           attrs,
		ReadOnly:                   p.ControllerPublishReadOnly && onlyReadOnlyMany(claim.Spec.AccessModes),
		ControllerPublishSecretRef: refs[controllerPublishSecret],
		NodeStageSecretRef:         refs[nodeStageSecret],
		NodePublishSecretRef:       refs[nodePublishSecret],
		ControllerExpandSecretRef:  refs[controllerExpandSecret],
		NodeExpandSecretRef:        refs[nodeExpandSecret],
	}
	if datasource.ModeOf(claim.Spec.VolumeMode) == v1.PersistentVolumeFilesystem {
		csiSource.FSType = req.VolumeCapabilities[0].GetMount().GetFsType()
	}
	reclaim := v1.PersistentVolumeReclaimDelete
	if class.ReclaimPolicy != nil {
		reclaim = *class.ReclaimPolicy
	}
	pv := &v1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: pvName, Annotations: map[string]string{}},
		Spec: v1.PersistentVolumeSpec{
			AccessModes:                   claim.Spec.AccessModes,
			MountOptions:                  class.MountOptions,
			Capacity:                      v1.ResourceList{v1.ResourceStorage: *resource.NewQuantity(capacity, resource.BinarySI)},
			PersistentVolumeReclaimPolicy: reclaim,
			VolumeMode:                    claim.Spec.VolumeMode,
			PersistentVolumeSource:        v1.PersistentVolumeSource{CSI: csiSource},
		},
	}
	// Upstream sets node affinity only when it passed topology to the
	// driver: Topology nil means the driver lacks the capability or the
	// Topology feature gate is off.
	if p.Topology != nil {
		pv.Spec.NodeAffinity = topology.NodeAffinity(vol.AccessibleTopology)
	}
	// Recorded even when empty ("no secret"), so deletion never has to read
	// the StorageClass again.
	pv.Annotations[deletionSecretNameAnn], pv.Annotations[deletionSecretNamespaceAnn] = "", ""
	if ref := refs[provisionerSecret]; ref != nil {
		pv.Annotations[deletionSecretNameAnn] = ref.Name
		pv.Annotations[deletionSecretNamespaceAnn] = ref.Namespace
	}
	if ref := refs[controllerModifySecret]; ref != nil {
		pv.Annotations[modifySecretNameAnn] = ref.Name
		pv.Annotations[modifySecretNamespaceAnn] = ref.Namespace
	}
	if src != nil {
		pv.Annotations[SourceNamespaceAnnotation] = src.Namespace
		pv.Annotations[SourceKindAnnotation] = src.Kind
		pv.Annotations[SourceNameAnnotation] = src.Name
		if src.CrossNamespace {
			pv.Annotations[ReferenceGrantAnnotation] = src.Grant
		}
	}
	return pv, nil
}

// volumeHandle is the PV's CSI volume handle, for logs; a PV written in the
// form of an in-tree plugin (CSI migration) has none.
func volumeHandle(pv *v1.PersistentVolume) string {
	if pv.Spec.CSI == nil {
		return "(in-tree form)"
	}
	return pv.Spec.CSI.VolumeHandle
}

func onlyReadOnlyMany(modes []v1.PersistentVolumeAccessMode) bool {
	for _, m := range modes {
		if m != v1.ReadOnlyMany {
			return false
		}
	}
	return len(modes) > 0
}

// recordProvenance tells both owners what happened: the claim learns its
// source (and grant), the source object in its own namespace learns who used it.
func (p *Provisioner) recordProvenance(claim *v1.PersistentVolumeClaim, pv *v1.PersistentVolume, src *datasource.Source) {
	if src == nil {
		return
	}
	if !src.CrossNamespace {
		p.Recorder.Eventf(claim, v1.EventTypeNormal, events.ProvisionedFromSource, "Provisioned %s from %s", pv.Name, src.Ref)
		return
	}
	p.Recorder.Eventf(claim, v1.EventTypeNormal, events.ProvisionedFromSource,
		"Provisioned %s from %s under ReferenceGrant %s/%s", pv.Name, src.Ref, src.Namespace, src.Grant)
	if obj, ok := src.Object.(runtime.Object); ok {
		p.Recorder.Eventf(obj, v1.EventTypeNormal, events.UsedAsDataSource,
			"Used as the source of %s/%s under ReferenceGrant %s/%s", claim.Namespace, claim.Name, src.Namespace, src.Grant)
	}
}
