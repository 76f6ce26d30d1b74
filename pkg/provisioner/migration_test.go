package provisioner

import (
	"context"
	"maps"
	"strings"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/kubernetes-csi/csi-lib-utils/connection"
	"google.golang.org/grpc"
	v1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/sig-storage-lib-external-provisioner/v10/controller"

	"github.com/crossns/external-provisioner/pkg/migration"
)

const (
	gceDriver = "pd.csi.storage.gke.io"
	gcePlugin = "kubernetes.io/gce-pd"
	gceDisks  = "projects/UNSPECIFIED/zones/UNSPECIFIED/disks/"
)

// migratedCSI records, per call, whether the context marked it as made for
// a migrated volume (the migrated label of the CSI call metrics).
type migratedCSI struct {
	*fakeCSI
	createMigrated, deleteMigrated []string
}

func migratedOf(ctx context.Context) string {
	if v, ok := ctx.Value(connection.AdditionalInfoKey).(connection.AdditionalInfo); ok {
		return v.Migrated
	}
	return ""
}

func (m *migratedCSI) CreateVolume(ctx context.Context, req *csi.CreateVolumeRequest, opts ...grpc.CallOption) (*csi.CreateVolumeResponse, error) {
	m.createMigrated = append(m.createMigrated, migratedOf(ctx))
	return m.fakeCSI.CreateVolume(ctx, req, opts...)
}

func (m *migratedCSI) DeleteVolume(ctx context.Context, req *csi.DeleteVolumeRequest, opts ...grpc.CallOption) (*csi.DeleteVolumeResponse, error) {
	m.deleteMigrated = append(m.deleteMigrated, migratedOf(ctx))
	return m.fakeCSI.DeleteVolume(ctx, req, opts...)
}

// newGCEEnv is an env whose driver is pd.csi.storage.gke.io, the migration
// target of kubernetes.io/gce-pd, answering with GCE PD volume handles.
func newGCEEnv(t *testing.T, objs ...runtime.Object) (*env, *migratedCSI) {
	t.Helper()
	e := newEnv(t, objs...)
	e.resolver.DriverName = gceDriver
	e.p.DriverName = gceDriver
	e.p.Migration = migration.For(gceDriver)
	m := &migratedCSI{fakeCSI: e.csi}
	e.p.CSI = m
	e.csi.script = []createFunc{gceCreate(), gceCreate()}
	return e, m
}

func gceCreate() createFunc {
	return createWith(func(v *csi.Volume) { v.VolumeId = gceDisks + strings.TrimPrefix(v.VolumeId, "vol-") })
}

func gceClaim(ann ...string) *v1.PersistentVolumeClaim {
	if len(ann) == 0 {
		ann = []string{"volume.kubernetes.io/storage-provisioner", gceDriver}
	}
	return newClaim("dev", "data", withAnnotations(ann...))
}

func gceClass(provisioner string, params map[string]string) *storagev1.StorageClass {
	return newClass(params, func(c *storagev1.StorageClass) { c.Provisioner = provisioner })
}

func TestProvisionMigrated(t *testing.T) {
	for _, tc := range []struct {
		name  string
		claim *v1.PersistentVolumeClaim
		class *storagev1.StorageClass
		// wantParams nil: the driver is not asked.
		wantParams   map[string]string
		wantFSType   string
		wantInTree   bool
		wantMigrated string
		wantIgnored  bool
	}{
		{
			name:         "class of the in-tree plugin: translated, PV in in-tree form",
			claim:        gceClaim(),
			class:        gceClass(gcePlugin, map[string]string{"type": "pd-ssd", "fstype": "xfs", "replication-type": "none"}),
			wantParams:   map[string]string{"type": "pd-ssd", "replication-type": "none"},
			wantFSType:   "xfs",
			wantInTree:   true,
			wantMigrated: "true",
		},
		{
			name:         "claim migrated-to the driver (annotated by an older PV controller)",
			claim:        gceClaim("volume.kubernetes.io/storage-provisioner", gcePlugin, migration.AnnMigratedTo, gceDriver),
			class:        gceClass(gcePlugin, map[string]string{"type": "pd-standard"}),
			wantParams:   map[string]string{"type": "pd-standard"},
			wantInTree:   true,
			wantMigrated: "true",
		},
		{
			name:       "class of the driver itself: CSI as always",
			claim:      gceClaim(),
			class:      gceClass(gceDriver, map[string]string{"type": "pd-ssd", "csi.storage.k8s.io/fstype": "ext4"}),
			wantParams: map[string]string{"type": "pd-ssd"},
			wantFSType: "ext4",
		},
		{
			name:        "claim left to the in-tree plugin (migration off in the PV controller): ignored",
			claim:       gceClaim("volume.kubernetes.io/storage-provisioner", gcePlugin),
			class:       gceClass(gcePlugin, map[string]string{"type": "pd-ssd"}),
			wantIgnored: true,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, m := newGCEEnv(t, tc.claim)
			pv, state, err := e.provision(tc.claim, tc.class)
			if tc.wantIgnored {
				if !isIgnored(err) || state != controller.ProvisioningFinished {
					t.Fatalf("Provision = %v, %v; want an IgnoredError", state, err)
				}
				e.assertNoCreate(t)
				e.assertEvents(t)
				return
			}
			if err != nil || state != controller.ProvisioningFinished {
				t.Fatalf("Provision = %v, %v", state, err)
			}
			req := e.onlyCreate(t)
			if !maps.Equal(req.Parameters, tc.wantParams) {
				t.Errorf("CreateVolume parameters = %v, want %v", req.Parameters, tc.wantParams)
			}
			if got := req.VolumeCapabilities[0].GetMount().GetFsType(); got != tc.wantFSType {
				t.Errorf("CreateVolume fstype = %q, want %q", got, tc.wantFSType)
			}
			if got := m.createMigrated[0]; got != tc.wantMigrated {
				t.Errorf("CreateVolume marked migrated=%q, want %q", got, tc.wantMigrated)
			}
			handle := gceDisks + req.Name
			if !tc.wantInTree {
				if pv.Spec.CSI == nil || pv.Spec.CSI.VolumeHandle != handle || pv.Annotations[migration.AnnMigratedTo] != "" {
					t.Errorf("PV = %+v, want a CSI PV with handle %s", pv.Spec.PersistentVolumeSource, handle)
				}
				return
			}
			if pv.Spec.CSI != nil || pv.Spec.GCEPersistentDisk == nil {
				t.Fatalf("PV source = %+v, want the in-tree GCE PD form", pv.Spec.PersistentVolumeSource)
			}
			if gce := pv.Spec.GCEPersistentDisk; gce.PDName != req.Name || gce.FSType != tc.wantFSType {
				t.Errorf("GCE PD source = %+v, want disk %s, fstype %q", gce, req.Name, tc.wantFSType)
			}
			if got := pv.Annotations[migration.AnnMigratedTo]; got != gceDriver {
				t.Errorf("annotation %s = %q, want %q", migration.AnnMigratedTo, got, gceDriver)
			}
			if _, ok := pv.Annotations[deletionSecretNameAnn]; !ok {
				t.Errorf("PV lost the deletion secret record: %v", pv.Annotations)
			}
		})
	}
}

// TestProvisionMigratedUntranslatable: a volume the PV cannot describe in
// in-tree form is deleted again, not left without a PV.
func TestProvisionMigratedUntranslatable(t *testing.T) {
	claim := gceClaim()
	e, _ := newGCEEnv(t, claim)
	e.csi.script = []createFunc{createOK()} // "vol-pvc-…": no GCE PD handle
	_, state, err := e.provision(claim, gceClass(gcePlugin, nil))
	if err == nil || state != controller.ProvisioningFinished {
		t.Fatalf("Provision = %v, %v; want a final failure", state, err)
	}
	if got, want := e.csi.deletedIDs(), []string{"vol-" + pvName}; len(got) != 1 || got[0] != want[0] {
		t.Errorf("DeleteVolume calls %v, want %v", got, want)
	}
}

func TestDeleteMigrated(t *testing.T) {
	inTree := func(mods ...func(*v1.PersistentVolume)) *v1.PersistentVolume {
		pv := &v1.PersistentVolume{
			ObjectMeta: metav1.ObjectMeta{Name: pvName, Annotations: map[string]string{
				migration.AnnProvisionedBy: gcePlugin, migration.AnnMigratedTo: gceDriver}},
			Spec: v1.PersistentVolumeSpec{
				StorageClassName: "standard",
				ClaimRef:         &v1.ObjectReference{Namespace: "dev", Name: "data", UID: claimUID},
				PersistentVolumeSource: v1.PersistentVolumeSource{
					GCEPersistentDisk: &v1.GCEPersistentDiskVolumeSource{PDName: "disk-1"}},
			},
		}
		for _, m := range mods {
			m(pv)
		}
		return pv
	}
	for _, tc := range []struct {
		name         string
		pv           *v1.PersistentVolume
		objects      []runtime.Object
		wantID       string
		wantSecrets  map[string]string
		wantMigrated string
		wantIgnored  bool
	}{
		{name: "in-tree PV: DeleteVolume with the driver's handle", pv: inTree(withDeletionSecret("", "")),
			wantID: gceDisks + "disk-1", wantMigrated: "true"},
		{name: "deletion secret recorded on the PV", pv: inTree(withDeletionSecret("creds", "secrets")), objects: secretFixtures(),
			wantID: gceDisks + "disk-1", wantSecrets: map[string]string{"user": "admin", "password": "s3cret"}, wantMigrated: "true"},
		{name: "no record: secret from the translated class", pv: inTree(),
			objects: append(secretFixtures(), gceClass(gcePlugin, secretParams("provisioner", "${pv.name}", "secrets"))),
			wantID:  gceDisks + "disk-1", wantSecrets: map[string]string{"token": "per-volume"}, wantMigrated: "true"},
		{name: "CSI PV of the driver", pv: csiVolume(pvName, gceDriver, gceDisks+"disk-2"), wantID: gceDisks + "disk-2"},
		{name: "in-tree PV of another plugin", pv: &v1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: "ebs"},
			Spec: v1.PersistentVolumeSpec{PersistentVolumeSource: v1.PersistentVolumeSource{
				AWSElasticBlockStore: &v1.AWSElasticBlockStoreVolumeSource{VolumeID: "vol-1"}}}}, wantIgnored: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, m := newGCEEnv(t, tc.objects...)
			err := e.p.Delete(context.Background(), tc.pv)
			if tc.wantIgnored {
				if !isIgnored(err) || len(e.csi.deletes) != 0 {
					t.Fatalf("Delete = %v with %d DeleteVolume calls; want it ignored", err, len(e.csi.deletes))
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(e.csi.deletes) != 1 {
				t.Fatalf("%d DeleteVolume calls, want 1", len(e.csi.deletes))
			}
			if got := e.csi.deletes[0]; got.VolumeId != tc.wantID || !maps.Equal(got.Secrets, tc.wantSecrets) {
				t.Errorf("DeleteVolume(%q, secrets %v), want (%q, %v)", got.VolumeId, got.Secrets, tc.wantID, tc.wantSecrets)
			}
			if got := m.deleteMigrated[0]; got != tc.wantMigrated {
				t.Errorf("DeleteVolume marked migrated=%q, want %q", got, tc.wantMigrated)
			}
			if tc.pv.Spec.GCEPersistentDisk == nil && tc.pv.Spec.CSI == nil && tc.pv.Spec.AWSElasticBlockStore == nil {
				t.Errorf("Delete changed the PV it was given")
			}
		})
	}
}
