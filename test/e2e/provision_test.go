package e2e

// Issue 3: the sidecar as a drop-in provisioner, on the real bed.

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

// A user creates a claim, gets a volume, deletes the claim, and the
// backend volume is gone.
func TestDynamicProvisioningAndDeletion(t *testing.T) {
	c := requireBed(t)
	ns := createNamespace(t, c, "dyn")
	pvc := createClaim(t, c, newClaim(ns, "data", "2Mi"))
	pv := waitBound(t, c, ns, "data")

	if pv.Spec.CSI == nil || pv.Spec.CSI.Driver != driverName {
		t.Fatalf("PV %s is not a CSI volume of %s: %+v", pv.Name, driverName, pv.Spec.PersistentVolumeSource)
	}
	if got := pv.Spec.Capacity.Storage().Value(); got < 2<<20 {
		t.Errorf("PV capacity %d, want at least 2Mi", got)
	}
	if pv.Spec.CSI.VolumeAttributes["storage.kubernetes.io/csiProvisionerIdentity"] == "" {
		t.Errorf("PV has no provisioner identity attribute: %v", pv.Spec.CSI.VolumeAttributes)
	}
	if pv.Spec.PersistentVolumeReclaimPolicy != corev1.PersistentVolumeReclaimDelete {
		t.Errorf("reclaim policy %s, want Delete", pv.Spec.PersistentVolumeReclaimPolicy)
	}
	if calls := createVolumeCalls(t, pvc); len(calls) == 0 || calls[0].VolumeCapabilities[0].GetMount() == nil {
		t.Fatalf("driver got %d CreateVolume calls for the claim, want a mount volume", len(calls))
	}
	dir := volumeDir(pv)
	if _, err := os.Stat(dir); err != nil {
		t.Fatalf("volume directory of %s: %v", pv.Name, err)
	}

	if err := c.kube.CoreV1().PersistentVolumeClaims(ns).Delete(testContext(t), "data", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, provisionWait, "PV and its volume directory to be deleted", func(ctx context.Context) (bool, string, error) {
		_, err := c.kube.CoreV1().PersistentVolumes().Get(ctx, pv.Name, metav1.GetOptions{})
		_, statErr := os.Stat(dir)
		return apierrors.IsNotFound(err) && os.IsNotExist(statErr), fmt.Sprintf("PV get: %v; dir: %v", err, statErr), nil
	})
}

// A block claim gets a block PV, and the driver was asked for a block volume.
func TestBlockVolume(t *testing.T) {
	c := requireBed(t)
	ns := createNamespace(t, c, "block")
	claim := newClaim(ns, "raw", "1Mi")
	claim.Spec.VolumeMode = ptr.To(corev1.PersistentVolumeBlock)
	pvc := createClaim(t, c, claim)
	pv := waitBound(t, c, ns, "raw")
	if pv.Spec.VolumeMode == nil || *pv.Spec.VolumeMode != corev1.PersistentVolumeBlock {
		t.Errorf("PV volume mode %v, want Block", pv.Spec.VolumeMode)
	}
	if pv.Spec.CSI.FSType != "" {
		t.Errorf("block PV has fsType %q", pv.Spec.CSI.FSType)
	}
	calls := createVolumeCalls(t, pvc)
	if len(calls) == 0 || calls[0].VolumeCapabilities[0].GetBlock() == nil {
		t.Fatalf("driver was not asked for a block volume: %v", calls)
	}
}

// An admin's StorageClass names secrets with templates; the PV carries the
// resolved references and the driver got the provisioner secret.
func TestSecretsTemplating(t *testing.T) {
	c := requireBed(t)
	ns := createNamespace(t, c, "secrets")
	ctx := testContext(t)
	for _, name := range []string{"app-provision", "app-publish"} {
		_, err := c.kube.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
			StringData: map[string]string{"password": "s3cret-" + name},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
	}
	className := bedName(ns, "secrets")
	_, err := c.kube.StorageV1().StorageClasses().Create(ctx, &storagev1.StorageClass{
		ObjectMeta:  metav1.ObjectMeta{Name: className},
		Provisioner: driverName,
		Parameters: map[string]string{
			"csi.storage.k8s.io/provisioner-secret-name":       "${pvc.name}-provision",
			"csi.storage.k8s.io/provisioner-secret-namespace":  "${pvc.namespace}",
			"csi.storage.k8s.io/node-publish-secret-name":      "${pvc.annotations['team/secret']}",
			"csi.storage.k8s.io/node-publish-secret-namespace": "${pvc.namespace}",
			"tier": "gold",
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = c.kube.StorageV1().StorageClasses().Delete(context.Background(), className, metav1.DeleteOptions{})
	})
	claim := newClaim(ns, "app", "1Mi")
	claim.Spec.StorageClassName = ptr.To(className)
	claim.Annotations = map[string]string{"team/secret": "app-publish"}
	pvc := createClaim(t, c, claim)
	pv := waitBound(t, c, ns, "app")

	if ref := pv.Spec.CSI.NodePublishSecretRef; ref == nil || ref.Name != "app-publish" || ref.Namespace != ns {
		t.Errorf("node-publish secret ref %+v, want %s/app-publish", ref, ns)
	}
	if pv.Annotations["volume.kubernetes.io/provisioner-deletion-secret-name"] != "app-provision" {
		t.Errorf("deletion secret not recorded on the PV: %v", pv.Annotations)
	}
	calls, raw := createVolumeRecords(t, pvc)
	if len(calls) == 0 {
		t.Fatal("no CreateVolume call")
	}
	// The driver's log redacts secrets; their presence shows they were sent.
	if !strings.Contains(string(raw[0].Request), `"secrets":"***stripped***"`) {
		t.Errorf("CreateVolume request %s carried no secrets, want the provisioner secret", raw[0].Request)
	}
	if calls[0].Parameters["tier"] != "gold" || calls[0].Parameters["csi.storage.k8s.io/provisioner-secret-name"] != "" {
		t.Errorf("parameters %v: want driver parameters only, reserved keys removed", calls[0].Parameters)
	}

	// A claim whose template cannot resolve gets an Event and no volume.
	bad := newClaim(ns, "no-annotation", "1Mi")
	bad.Spec.StorageClassName = ptr.To(className)
	badPVC := createClaim(t, c, bad)
	msg := waitEvent(t, c, ns, "no-annotation", "ProvisioningFailed")
	if !strings.Contains(msg, "team/secret") {
		t.Errorf("event %q does not name the missing annotation", msg)
	}
	requireNoCreateVolume(t, badPVC)
}

// A user restores a snapshot in the same namespace: the files are there.
func TestRestoreFromSnapshotSameNamespace(t *testing.T) {
	c := requireBed(t)
	ns := createNamespace(t, c, "restore")
	files := map[string]string{"db/table.csv": "id,name\n1,alice\n", "README": "hello"}
	provisionSource(t, c, ns, "source", files)
	snapshotOf(t, c, ns, "snap", "source")

	createClaim(t, c, fromSnapshot(newClaim(ns, "restored", "1Mi"), "", "snap"))
	pv := waitBound(t, c, ns, "restored")
	requireFiles(t, volumeDir(pv), files)
	if pv.Annotations["provisioner.crossns.io/source-kind"] != "VolumeSnapshot" {
		t.Errorf("PV provenance annotations %v", pv.Annotations)
	}
}

// A user clones a claim in the same namespace: the files are there.
func TestCloneSameNamespace(t *testing.T) {
	c := requireBed(t)
	ns := createNamespace(t, c, "clone")
	files := map[string]string{"model.bin": "weights-v1"}
	provisionSource(t, c, ns, "source", files)

	createClaim(t, c, fromClaim(newClaim(ns, "copy", "1Mi"), "", "source"))
	pv := waitBound(t, c, ns, "copy")
	requireFiles(t, volumeDir(pv), files)
}

// A restore smaller than the snapshot is refused with an Event naming the
// sizes, and the driver never sees it.
func TestRestoreSmallerThanSnapshotRefused(t *testing.T) {
	c := requireBed(t)
	ns := createNamespace(t, c, "small")
	createClaim(t, c, newClaim(ns, "big", "4Mi"))
	waitBound(t, c, ns, "big")
	snapshotOf(t, c, ns, "snap", "big")

	pvc := createClaim(t, c, fromSnapshot(newClaim(ns, "tiny", "1Mi"), "", "snap"))
	msg := waitEvent(t, c, ns, "tiny", "ProvisioningFailed")
	if !strings.Contains(msg, "restore size") {
		t.Errorf("event %q does not explain the size", msg)
	}
	requireNoCreateVolume(t, pvc)
}
