package provisioner

import (
	"context"
	"reflect"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	v1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/utils/ptr"
)

// ownVolume is a PV this sidecar provisioned for claim dev/data.
func ownVolume(mods ...func(*v1.PersistentVolume)) *v1.PersistentVolume {
	pv := csiVolume(pvName, driverName, "vol-1")
	pv.Spec.StorageClassName = "standard"
	pv.Spec.ClaimRef = &v1.ObjectReference{Kind: "PersistentVolumeClaim", Namespace: "dev", Name: "data", UID: claimUID}
	for _, m := range mods {
		m(pv)
	}
	return pv
}

func withDeletionSecret(name, namespace string) func(*v1.PersistentVolume) {
	return func(pv *v1.PersistentVolume) {
		pv.Annotations = map[string]string{deletionSecretNameAnn: name, deletionSecretNamespaceAnn: namespace}
	}
}

func TestDelete(t *testing.T) {
	perClaim := map[string]string{"token": "per-claim"}
	creds := map[string]string{"user": "admin", "password": "s3cret"}
	tests := []struct {
		name      string
		pv        *v1.PersistentVolume
		objects   []runtime.Object
		deleteErr error
		// want is the DeleteVolume request; nil means the driver is not asked
		want        *csi.DeleteVolumeRequest
		wantIgnored bool
		wantErr     string
	}{
		{name: "volume of this driver without secret", pv: ownVolume(), want: &csi.DeleteVolumeRequest{VolumeId: "vol-1"}},
		{name: "not a CSI volume", pv: &v1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: "nfs-1"}, Spec: v1.PersistentVolumeSpec{
			PersistentVolumeSource: v1.PersistentVolumeSource{NFS: &v1.NFSVolumeSource{Server: "nfs", Path: "/export"}},
		}}, wantIgnored: true, wantErr: "not a volume of driver " + driverName},
		{name: "volume of another driver", pv: csiVolume("pv-ebs", "ebs.csi.aws.com", "vol-ebs"), wantIgnored: true, wantErr: "PV pv-ebs is not a volume of driver"},
		{name: "deletion secret from the PV", pv: ownVolume(withDeletionSecret("creds", "secrets")), objects: secretFixtures(),
			want: &csi.DeleteVolumeRequest{VolumeId: "vol-1", Secrets: creds}},
		{name: "the PV's record wins over the class", pv: ownVolume(withDeletionSecret("creds", "secrets")),
			objects: append(secretFixtures(), newClass(secretParams("provisioner", "${pvc.name}", "${pvc.namespace}"))),
			want:    &csi.DeleteVolumeRequest{VolumeId: "vol-1", Secrets: creds}},
		{name: "deletion secret gone: DeleteVolume without it, the volume does not stay for ever", pv: ownVolume(withDeletionSecret("creds", "secrets")),
			want: &csi.DeleteVolumeRequest{VolumeId: "vol-1"}},
		{name: "driver fails", pv: ownVolume(), deleteErr: status.Error(codes.FailedPrecondition, "volume has snapshots"),
			want: &csi.DeleteVolumeRequest{VolumeId: "vol-1"}, wantErr: `DeleteVolume "vol-1"`},
		{name: "PV without record: secret from the class", pv: ownVolume(),
			objects: append(secretFixtures(), newClass(secretParams("provisioner", "${pv.name}", "secrets"))),
			want:    &csi.DeleteVolumeRequest{VolumeId: "vol-1", Secrets: map[string]string{"token": "per-volume"}}},
		{name: "PV without record: class templates resolved from the claimRef", pv: ownVolume(),
			objects: append(secretFixtures(), newClass(secretParams("provisioner", "${pvc.name}", "${pvc.namespace}"))),
			want:    &csi.DeleteVolumeRequest{VolumeId: "vol-1", Secrets: perClaim}},
		{name: "PV without record: class without secret", pv: ownVolume(), objects: objs(newClass(map[string]string{"type": "ssd"})),
			want: &csi.DeleteVolumeRequest{VolumeId: "vol-1"}},
		{name: "PV without record: class gone", pv: ownVolume(), want: &csi.DeleteVolumeRequest{VolumeId: "vol-1"}},
		{name: "PV recorded without secret (empty annotations): the class is not consulted", pv: ownVolume(withDeletionSecret("", "")),
			objects: append(secretFixtures(), newClass(secretParams("provisioner", "creds", "secrets"))),
			want:    &csi.DeleteVolumeRequest{VolumeId: "vol-1"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, tc.objects...)
			e.csi.deleteErrs = []error{tc.deleteErr}
			err := e.p.Delete(context.Background(), tc.pv)
			assertErr(t, err, tc.wantErr)
			if isIgnored(err) != tc.wantIgnored {
				t.Errorf("IgnoredError = %v, want %v (err %v)", isIgnored(err), tc.wantIgnored, err)
			}
			switch {
			case tc.want == nil && len(e.csi.deletes) != 0:
				t.Errorf("DeleteVolume %v, want none", e.csi.deletes)
			case tc.want != nil && (len(e.csi.deletes) != 1 || !proto.Equal(e.csi.deletes[0], tc.want)):
				t.Errorf("DeleteVolume %v, want %v", e.csi.deletes, tc.want)
			}
			e.assertNoCreate(t)
		})
	}
}

// TestDeletionSecretRoundTrip provisions with a templated provisioner secret
// and deletes the PV after claim and class are gone: DeleteVolume still gets
// the secret CreateVolume got.
func TestDeletionSecretRoundTrip(t *testing.T) {
	tests := []struct {
		name         string
		nameTmpl     string
		nsTmpl       string
		wantPVRecord map[string]string
		wantSecrets  map[string]string
	}{
		{name: "claim templates", nameTmpl: "${pvc.name}", nsTmpl: "${pvc.namespace}",
			wantPVRecord: map[string]string{deletionSecretNameAnn: "data", deletionSecretNamespaceAnn: "dev"},
			wantSecrets:  map[string]string{"token": "per-claim"}},
		{name: "volume template", nameTmpl: "${pv.name}", nsTmpl: "secrets",
			wantPVRecord: map[string]string{deletionSecretNameAnn: pvName, deletionSecretNamespaceAnn: "secrets"},
			wantSecrets:  map[string]string{"token": "per-volume"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, secretFixtures()...)
			pv, _, err := e.provision(newClaim("dev", "data"), newClass(secretParams("provisioner", tc.nameTmpl, tc.nsTmpl)))
			if err != nil {
				t.Fatalf("Provision: %v", err)
			}
			if !reflect.DeepEqual(pv.Annotations, tc.wantPVRecord) {
				t.Errorf("PV annotations = %v, want %v", pv.Annotations, tc.wantPVRecord)
			}
			if got := e.onlyCreate(t).Secrets; !reflect.DeepEqual(got, tc.wantSecrets) {
				t.Errorf("CreateVolume secrets = %v, want %v", got, tc.wantSecrets)
			}
			pv.Spec.StorageClassName = "standard" // set by the provision loop; the class no longer exists
			if err := e.p.Delete(context.Background(), pv); err != nil {
				t.Fatalf("Delete: %v", err)
			}
			want := &csi.DeleteVolumeRequest{VolumeId: "vol-" + pvName, Secrets: tc.wantSecrets}
			if len(e.csi.deletes) != 1 || !proto.Equal(e.csi.deletes[0], want) {
				t.Errorf("DeleteVolume %v, want %v", e.csi.deletes, want)
			}
		})
	}
}

func TestShouldDelete(t *testing.T) {
	attachment := func(name string, pv *string) *storagev1.VolumeAttachment {
		return &storagev1.VolumeAttachment{
			ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: storagev1.VolumeAttachmentSpec{Attacher: driverName, NodeName: "node-a",
				Source: storagev1.VolumeAttachmentSource{PersistentVolumeName: pv}},
		}
	}
	tests := []struct {
		name     string
		objects  []runtime.Object
		noLister bool
		want     bool
	}{
		{name: "no attachments", want: true},
		{name: "attachment of another PV", objects: objs(attachment("csi-other", ptr.To("pv-other"))), want: true},
		{name: "inline volume attachment", objects: objs(attachment("csi-inline", nil)), want: true},
		{name: "still attached", objects: objs(attachment("csi-other", ptr.To("pv-other")), attachment("csi-mine", ptr.To(pvName))), want: false},
		{name: "no VolumeAttachment lister", noLister: true, want: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, tc.objects...)
			if tc.noLister {
				e.p.VolumeAttachments = nil
			}
			if got := e.p.ShouldDelete(context.Background(), ownVolume()); got != tc.want {
				t.Errorf("ShouldDelete = %v, want %v", got, tc.want)
			}
			if len(e.csi.deletes) != 0 {
				t.Errorf("ShouldDelete called DeleteVolume: %v", e.csi.deletes)
			}
		})
	}
}

// After its own DeleteVolume succeeded, the provisioner does not delete a
// PV again while the PV object is on its way out (the loop may see a stale
// copy), but a PV whose API delete failed (no deletionTimestamp) is retried.
func TestShouldDeleteAfterOwnDelete(t *testing.T) {
	tests := []struct {
		name        string
		deletedHere bool
		terminating bool
		want        bool
	}{
		{name: "deleted here, PV terminating: not again", deletedHere: true, terminating: true, want: false},
		{name: "deleted here, PV delete failed: retried", deletedHere: true, want: true},
		{name: "PV terminating, volume not deleted here", terminating: true, want: true},
		{name: "released PV", want: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			pv := ownVolume()
			if tc.deletedHere {
				if err := e.p.Delete(context.Background(), pv); err != nil {
					t.Fatalf("Delete: %v", err)
				}
			}
			if tc.terminating {
				pv.DeletionTimestamp = ptr.To(metav1.Now())
			}
			if got := e.p.ShouldDelete(context.Background(), pv); got != tc.want {
				t.Errorf("ShouldDelete = %v, want %v", got, tc.want)
			}
		})
	}
}
