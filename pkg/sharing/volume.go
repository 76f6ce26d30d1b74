package sharing

import (
	"maps"
	"slices"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Annotations external-resizer reads the controller-modify secret from
// (upstream external-provisioner writes them; so does pkg/provisioner).
const (
	modifySecretNameAnn      = "volume.kubernetes.io/controller-modify-secret-name"
	modifySecretNamespaceAnn = "volume.kubernetes.io/controller-modify-secret-namespace"
)

// subordinate builds the PV that binds claim to the decided source's
// volume. Shape:
//
//	metadata.name: pvName; annotations: shared-from, -uid, -volume,
//	  shared-access, reference-grant (across namespaces)
//	spec.csi: the source PV's driver, volumeHandle, volumeAttributes, fsType,
//	  controller-publish, node-stage and node-publish secret references;
//	  readOnly when the claim asks only ReadOnlyMany (or the source is
//	  read-only); expand secrets: ExpansionRefusedSecret
//	spec: the claim's access modes and VolumeAttributesClass, the source's
//	  capacity, volume mode, mount options and node affinity; reclaim Delete
//
// Reclaim Delete lets the provision loop remove the PV once its claim is
// gone — the provisioner's Delete never calls DeleteVolume for it — so a
// share never outlives its claim and holds the source for ever. The
// provision loop adds the claim reference, class and its own annotation.
func subordinate(claim *v1.PersistentVolumeClaim, pvName string, d *decision) *v1.PersistentVolume {
	src := d.volume
	refused := &v1.SecretReference{Name: ExpansionRefusedSecret, Namespace: d.from.Namespace}
	csi := &v1.CSIPersistentVolumeSource{
		Driver:                     src.Spec.CSI.Driver,
		VolumeHandle:               src.Spec.CSI.VolumeHandle,
		VolumeAttributes:           maps.Clone(src.Spec.CSI.VolumeAttributes),
		FSType:                     src.Spec.CSI.FSType,
		ReadOnly:                   src.Spec.CSI.ReadOnly || onlyReadOnly(claim.Spec.AccessModes),
		ControllerPublishSecretRef: src.Spec.CSI.ControllerPublishSecretRef.DeepCopy(),
		NodeStageSecretRef:         src.Spec.CSI.NodeStageSecretRef.DeepCopy(),
		NodePublishSecretRef:       src.Spec.CSI.NodePublishSecretRef.DeepCopy(),
		ControllerExpandSecretRef:  refused,
		NodeExpandSecretRef:        refused.DeepCopy(),
	}
	pv := &v1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{
			Name: pvName,
			Annotations: map[string]string{
				SharedFromAnnotation:     d.from.String(),
				SharedFromUIDAnnotation:  string(d.source.UID),
				SharedVolumeAnnotation:   src.Name,
				SharedAccessAnnotation:   d.allowed.String(),
				modifySecretNameAnn:      refused.Name,
				modifySecretNamespaceAnn: refused.Namespace,
			},
		},
		Spec: v1.PersistentVolumeSpec{
			AccessModes:                   slices.Clone(claim.Spec.AccessModes),
			Capacity:                      v1.ResourceList{v1.ResourceStorage: src.Spec.Capacity[v1.ResourceStorage].DeepCopy()},
			PersistentVolumeReclaimPolicy: v1.PersistentVolumeReclaimDelete,
			VolumeMode:                    src.Spec.VolumeMode,
			MountOptions:                  slices.Clone(src.Spec.MountOptions),
			NodeAffinity:                  src.Spec.NodeAffinity.DeepCopy(),
			VolumeAttributesClassName:     claim.Spec.VolumeAttributesClassName,
			PersistentVolumeSource:        v1.PersistentVolumeSource{CSI: csi},
		},
	}
	if d.grant != "" {
		pv.Annotations[ReferenceGrantAnnotation] = d.grant
	}
	return pv
}
