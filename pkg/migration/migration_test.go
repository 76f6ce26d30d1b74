package migration

import (
	"context"
	"maps"
	"reflect"
	"testing"

	"github.com/kubernetes-csi/csi-lib-utils/connection"
	v1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/klog/v2"
)

const (
	gceDriver = "pd.csi.storage.gke.io"
	gcePlugin = "kubernetes.io/gce-pd"
	// gceHandle is the handle pd.csi.storage.gke.io gives a zonal disk.
	gceHandle = "projects/UNSPECIFIED/zones/UNSPECIFIED/disks/pvc-1"
)

func TestFor(t *testing.T) {
	for _, tc := range []struct {
		driver, plugin string
	}{
		{driver: gceDriver, plugin: gcePlugin},
		{driver: "ebs.csi.aws.com", plugin: "kubernetes.io/aws-ebs"},
		{driver: "disk.csi.azure.com", plugin: "kubernetes.io/azure-disk"},
		{driver: "file.csi.crossns.io"},
		{driver: ""},
	} {
		t.Run(tc.driver, func(t *testing.T) {
			m := For(tc.driver)
			if got := m.InTreePlugin(); got != tc.plugin {
				t.Errorf("InTreePlugin() = %q, want %q", got, tc.plugin)
			}
			if (m == nil) != (tc.plugin == "") {
				t.Errorf("For(%q) = %v, want nil only without an in-tree plugin", tc.driver, m)
			}
		})
	}
}

func TestAccepts(t *testing.T) {
	for _, tc := range []struct {
		name   string
		driver string
		ann    map[string]string
		want   bool
	}{
		{name: "claim of the driver", driver: gceDriver, ann: map[string]string{annStorageProvisioner: gceDriver}, want: true},
		{name: "beta annotation", driver: gceDriver, ann: map[string]string{annBetaStorageProvisioner: gceDriver}, want: true},
		{name: "migrated to the driver", driver: gceDriver, ann: map[string]string{annStorageProvisioner: gcePlugin, AnnMigratedTo: gceDriver}, want: true},
		{name: "in-tree, migration off", driver: gceDriver, ann: map[string]string{annStorageProvisioner: gcePlugin}},
		{name: "migrated elsewhere", driver: gceDriver, ann: map[string]string{annStorageProvisioner: gcePlugin, AnnMigratedTo: "other.csi"}},
		{name: "no annotation", driver: gceDriver},
		{name: "not a migration target accepts all", driver: "file.csi.crossns.io", ann: map[string]string{annStorageProvisioner: "whatever"}, want: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			claim := &v1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Annotations: tc.ann}}
			if got := For(tc.driver).Accepts(claim); got != tc.want {
				t.Errorf("Accepts = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestClass(t *testing.T) {
	zone := []v1.TopologySelectorTerm{{MatchLabelExpressions: []v1.TopologySelectorLabelRequirement{{Key: "topology.gke.io/zone", Values: []string{"us-central1-a"}}}}}
	for _, tc := range []struct {
		name         string
		driver       string
		class        *storagev1.StorageClass
		wantMigrated bool
		wantParams   map[string]string
		wantTopology []v1.TopologySelectorTerm
		wantErr      bool
	}{
		{
			name:   "in-tree class translated",
			driver: gceDriver,
			class: &storagev1.StorageClass{ObjectMeta: metav1.ObjectMeta{Name: "standard"}, Provisioner: gcePlugin,
				Parameters: map[string]string{"type": "pd-ssd", "fstype": "ext4", "zone": "us-central1-a"}},
			wantMigrated: true,
			wantParams:   map[string]string{"type": "pd-ssd", "csi.storage.k8s.io/fstype": "ext4"},
			wantTopology: zone,
		},
		{
			name:         "CSI class of the driver unchanged",
			driver:       gceDriver,
			class:        &storagev1.StorageClass{Provisioner: gceDriver, Parameters: map[string]string{"zone": "z"}},
			wantParams:   map[string]string{"zone": "z"},
			wantMigrated: false,
		},
		{
			name:       "driver without migration",
			driver:     "file.csi.crossns.io",
			class:      &storagev1.StorageClass{Provisioner: gcePlugin, Parameters: map[string]string{"zone": "z"}},
			wantParams: map[string]string{"zone": "z"},
		},
		{
			name:   "zone and allowed topologies both",
			driver: gceDriver,
			class: &storagev1.StorageClass{Provisioner: gcePlugin, Parameters: map[string]string{"zone": "a"},
				AllowedTopologies: []v1.TopologySelectorTerm{{MatchLabelExpressions: []v1.TopologySelectorLabelRequirement{{Key: v1.LabelTopologyZone, Values: []string{"b"}}}}}},
			wantErr: true,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := tc.class.DeepCopy()
			got, migrated, err := For(tc.driver).Class(klog.Background(), tc.class)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error %v", err, tc.wantErr)
			}
			if err != nil {
				return
			}
			if migrated != tc.wantMigrated {
				t.Errorf("migrated = %v, want %v", migrated, tc.wantMigrated)
			}
			if !maps.Equal(got.Parameters, tc.wantParams) {
				t.Errorf("parameters = %v, want %v", got.Parameters, tc.wantParams)
			}
			if tc.wantTopology != nil && !reflect.DeepEqual(got.AllowedTopologies, tc.wantTopology) {
				t.Errorf("allowed topologies = %v, want %v", got.AllowedTopologies, tc.wantTopology)
			}
			if !maps.Equal(tc.class.Parameters, before.Parameters) {
				t.Errorf("the class given was changed: %v, was %v", tc.class.Parameters, before.Parameters)
			}
		})
	}
}

// TestRoundTrip: a PV made by the driver goes to the API in in-tree form and
// comes back to DeleteVolume with the handle the driver gave.
func TestRoundTrip(t *testing.T) {
	m := For(gceDriver)
	csiPV := &v1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: "pvc-1", Annotations: map[string]string{"volume.kubernetes.io/provisioner-deletion-secret-name": ""}},
		Spec: v1.PersistentVolumeSpec{
			AccessModes: []v1.PersistentVolumeAccessMode{v1.ReadWriteOnce},
			PersistentVolumeSource: v1.PersistentVolumeSource{CSI: &v1.CSIPersistentVolumeSource{
				Driver: gceDriver, VolumeHandle: gceHandle, FSType: "ext4",
				VolumeAttributes: map[string]string{"storage.kubernetes.io/csiProvisionerIdentity": "x"},
			}},
		},
	}
	inTree, err := m.ToInTree(csiPV)
	if err != nil {
		t.Fatal(err)
	}
	if inTree.Spec.CSI != nil || inTree.Spec.GCEPersistentDisk == nil {
		t.Fatalf("PV not in in-tree form: %+v", inTree.Spec.PersistentVolumeSource)
	}
	if got := inTree.Spec.GCEPersistentDisk; got.PDName != "pvc-1" || got.FSType != "ext4" {
		t.Errorf("GCE PD source = %+v, want disk pvc-1, ext4", got)
	}
	if got := inTree.Annotations[AnnMigratedTo]; got != gceDriver {
		t.Errorf("annotation %s = %q, want %q", AnnMigratedTo, got, gceDriver)
	}
	if _, ok := inTree.Annotations["volume.kubernetes.io/provisioner-deletion-secret-name"]; !ok {
		t.Errorf("annotations of the CSI PV lost: %v", inTree.Annotations)
	}
	if csiPV.Spec.CSI == nil || csiPV.Annotations[AnnMigratedTo] != "" {
		t.Errorf("ToInTree changed its input")
	}

	back, migrated, err := m.ToCSI(klog.Background(), inTree)
	if err != nil {
		t.Fatal(err)
	}
	if !migrated || back.Spec.CSI == nil {
		t.Fatalf("ToCSI = migrated %v, %+v", migrated, back.Spec.PersistentVolumeSource)
	}
	if back.Spec.CSI.Driver != gceDriver || back.Spec.CSI.VolumeHandle != gceHandle {
		t.Errorf("back in CSI form: driver %q handle %q, want %q %q", back.Spec.CSI.Driver, back.Spec.CSI.VolumeHandle, gceDriver, gceHandle)
	}
	if inTree.Spec.GCEPersistentDisk == nil {
		t.Errorf("ToCSI changed its input")
	}
}

func TestToCSILeavesOthers(t *testing.T) {
	csiPV := &v1.PersistentVolume{Spec: v1.PersistentVolumeSpec{PersistentVolumeSource: v1.PersistentVolumeSource{
		CSI: &v1.CSIPersistentVolumeSource{Driver: gceDriver, VolumeHandle: gceHandle}}}}
	nfsPV := &v1.PersistentVolume{Spec: v1.PersistentVolumeSpec{PersistentVolumeSource: v1.PersistentVolumeSource{
		NFS: &v1.NFSVolumeSource{Server: "s", Path: "/p"}}}}
	gcePV := &v1.PersistentVolume{Spec: v1.PersistentVolumeSpec{PersistentVolumeSource: v1.PersistentVolumeSource{
		GCEPersistentDisk: &v1.GCEPersistentDiskVolumeSource{PDName: "d"}}}}
	for _, tc := range []struct {
		name   string
		driver string
		pv     *v1.PersistentVolume
	}{
		{name: "CSI PV", driver: gceDriver, pv: csiPV},
		{name: "in-tree PV of no migrated plugin", driver: gceDriver, pv: nfsPV},
		{name: "driver without migration", driver: "file.csi.crossns.io", pv: gcePV},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, migrated, err := For(tc.driver).ToCSI(klog.Background(), tc.pv)
			if err != nil || migrated || got != tc.pv {
				t.Errorf("ToCSI = %v, %v, %v; want the PV unchanged", got, migrated, err)
			}
		})
	}
}

func TestContext(t *testing.T) {
	for _, migrated := range []bool{true, false} {
		v, ok := Context(context.Background(), migrated).Value(connection.AdditionalInfoKey).(connection.AdditionalInfo)
		want := "false"
		if migrated {
			want = "true"
		}
		if !ok || v.Migrated != want {
			t.Errorf("Context(%v) carries %+v, want Migrated %q", migrated, v, want)
		}
	}
}
