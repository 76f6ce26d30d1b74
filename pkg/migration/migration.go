// Package migration lets the sidecar of a CSI driver that replaces an
// in-tree volume plugin (CSI migration, e.g. pd.csi.storage.gke.io for
// kubernetes.io/gce-pd) provision and delete the volumes of StorageClasses
// that still name the in-tree plugin, as upstream external-provisioner does:
// the class is translated to the driver's parameters and topology before
// CreateVolume, the PV is written in the in-tree form the class's users
// expect, and such a PV is translated back before DeleteVolume. The
// translations are k8s.io/csi-translation-lib's, the ones kube-controller-
// manager and kubelet use, so all sides agree on the volume handle.
package migration

import (
	"context"
	"fmt"
	"strconv"

	"github.com/kubernetes-csi/csi-lib-utils/connection"
	v1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	csitrans "k8s.io/csi-translation-lib"
	"k8s.io/klog/v2"
)

// Annotations the PV controller and the provisioning library read.
const (
	// AnnMigratedTo names the CSI driver an in-tree object is handled by.
	// kube-controller-manager writes it on claims and PVs of migrated
	// plugins; the provisioner writes it on the PVs it makes in in-tree form.
	AnnMigratedTo = "pv.kubernetes.io/migrated-to"
	// AnnProvisionedBy is the provisioning library's: it names the class's
	// provisioner, the in-tree plugin for a migrated class.
	AnnProvisionedBy = "pv.kubernetes.io/provisioned-by"

	annStorageProvisioner     = "volume.kubernetes.io/storage-provisioner"
	annBetaStorageProvisioner = "volume.beta.kubernetes.io/storage-provisioner"
)

// Migration translates between one CSI driver and the in-tree plugin that
// migrates to it. A nil *Migration belongs to a driver no in-tree plugin
// migrates to: its methods leave everything as it is, so callers need no
// checks of their own.
type Migration struct {
	driver string
	plugin string
	t      csitrans.CSITranslator
}

// For returns the migration of driver, or nil when no in-tree plugin
// migrates to it (every driver but the few csi-translation-lib knows).
func For(driver string) *Migration {
	t := csitrans.New()
	if !t.IsMigratedCSIDriverByName(driver) {
		return nil
	}
	plugin, err := t.GetInTreeNameFromCSIName(driver)
	if err != nil {
		// IsMigratedCSIDriverByName and GetInTreeNameFromCSIName read the
		// same table: unreachable.
		return nil
	}
	return &Migration{driver: driver, plugin: plugin, t: t}
}

// InTreePlugin is the in-tree plugin name, e.g. kubernetes.io/gce-pd; ""
// for nil.
func (m *Migration) InTreePlugin() string {
	if m == nil {
		return ""
	}
	return m.plugin
}

// Accepts reports whether a claim the provision loop hands over is for this
// driver. The loop knows the in-tree name too (classes name it), but a claim
// the PV controller annotated with the in-tree plugin and not migrated-to
// this driver is one whose migration is off in kube-controller-manager: the
// in-tree plugin, not this driver, must provision it. nil accepts every
// claim: the loop handed over only this driver's.
func (m *Migration) Accepts(claim *v1.PersistentVolumeClaim) bool {
	if m == nil {
		return true
	}
	provisioner, ok := claim.Annotations[annStorageProvisioner]
	if !ok {
		provisioner = claim.Annotations[annBetaStorageProvisioner]
	}
	return provisioner == m.driver || claim.Annotations[AnnMigratedTo] == m.driver
}

// Class returns the class as the driver must see it: for a class naming the
// in-tree plugin, a translated copy (parameters in the driver's terms, zones
// as allowed topologies of the driver's key) and migrated true; any other
// class unchanged.
func (m *Migration) Class(logger klog.Logger, class *storagev1.StorageClass) (*storagev1.StorageClass, bool, error) {
	if m == nil || class == nil || class.Provisioner != m.plugin {
		return class, false, nil
	}
	translated, err := m.t.TranslateInTreeStorageClassToCSI(logger, m.plugin, class)
	if err != nil {
		return nil, false, fmt.Errorf("translating StorageClass %s of in-tree plugin %s to CSI driver %s: %w", class.Name, m.plugin, m.driver, err)
	}
	return translated, true, nil
}

// ToInTree returns a copy of a PV made for a migrated class in the in-tree
// plugin's form, annotated as migrated to the driver: what
// kube-controller-manager and kubelet expect of a volume of that class.
func (m *Migration) ToInTree(pv *v1.PersistentVolume) (*v1.PersistentVolume, error) {
	out, err := m.t.TranslateCSIPVToInTree(pv)
	if err != nil {
		return nil, fmt.Errorf("translating PV %s of CSI driver %s to in-tree plugin %s: %w", pv.Name, m.driver, m.plugin, err)
	}
	if out.Annotations == nil {
		out.Annotations = map[string]string{}
	}
	out.Annotations[AnnMigratedTo] = m.driver
	return out, nil
}

// ToCSI returns a PV in the in-tree form of a migrated plugin as a CSI PV
// (a copy, with the volume handle the driver gave it) and migrated true; any
// other PV unchanged. A PV of another migrated plugin comes back with that
// plugin's driver, which callers refuse as not theirs.
func (m *Migration) ToCSI(logger klog.Logger, pv *v1.PersistentVolume) (*v1.PersistentVolume, bool, error) {
	if m == nil || pv == nil || pv.Spec.CSI != nil || !m.t.IsPVMigratable(pv) {
		return pv, false, nil
	}
	out, err := m.t.TranslateInTreePVToCSI(logger, pv)
	if err != nil {
		return nil, false, fmt.Errorf("translating in-tree PV %s to CSI: %w", pv.Name, err)
	}
	return out, true, nil
}

// Context marks the CSI calls made with ctx as made for a migrated volume
// or not: the sidecar of a migration target labels its CSI call metrics
// (csi_sidecar_operations_seconds) with migrated="true" or "false", as
// upstream does. Calls made without it count as not migrated.
func Context(ctx context.Context, migrated bool) context.Context {
	return context.WithValue(ctx, connection.AdditionalInfoKey, connection.AdditionalInfo{Migrated: strconv.FormatBool(migrated)})
}
