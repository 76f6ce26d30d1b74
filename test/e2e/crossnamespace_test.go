package e2e

// Issue 4: cross-namespace data sources (KEP-3294) on the real bed.

import (
	"context"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/crossns/external-provisioner/test/csidriver"
)

const (
	snapshotGroup       = "snapshot.storage.k8s.io"
	protectionFinalizer = "provisioner.storage.kubernetes.io/cloning-protection"
)

// The KEP-3294 demo: prod holds a snapshot; a claim in dev waits, visibly,
// until prod's owner grants access; then it binds within seconds and holds
// prod's files; both owners can see what happened.
func TestRestoreFromSnapshotInAnotherNamespace(t *testing.T) {
	c := requireBed(t)
	prod := createNamespace(t, c, "prod")
	dev := createNamespace(t, c, "dev")
	files := map[string]string{"orders.csv": "id,total\n1,42\n"}
	provisionSource(t, c, prod, "db", files)
	snapshotOf(t, c, prod, "nightly", "db")

	pvc := createClaim(t, c, fromSnapshot(newClaim(dev, "copy", "1Mi"), prod, "nightly"))
	requireRefused(t, c, pvc, "ReferenceGrantMissing", prod, dev, "VolumeSnapshot", "nightly", "ReferenceGrant")

	granted := time.Now()
	grant(t, c, prod, "allow-dev", dev, snapshotGroup, "VolumeSnapshot", "nightly")
	pv := waitBound(t, c, dev, "copy")
	t.Logf("grant → claim bound: %s", time.Since(granted).Round(10*time.Millisecond))
	requireFiles(t, volumeDir(pv), files)

	wantAnn := map[string]string{
		"provisioner.crossns.io/source-namespace": prod,
		"provisioner.crossns.io/source-kind":      "VolumeSnapshot",
		"provisioner.crossns.io/source-name":      "nightly",
		"provisioner.crossns.io/reference-grant":  "allow-dev",
	}
	for k, v := range wantAnn {
		if pv.Annotations[k] != v {
			t.Errorf("PV annotation %s = %q, want %q", k, pv.Annotations[k], v)
		}
	}
	if msg := waitEvent(t, c, dev, "copy", "ProvisionedFromDataSource"); !strings.Contains(msg, prod+"/allow-dev") {
		t.Errorf("claim event %q does not name the grant", msg)
	}
	if msg := waitEvent(t, c, prod, "nightly", "UsedAsDataSource"); !strings.Contains(msg, dev+"/copy") || !strings.Contains(msg, "allow-dev") {
		t.Errorf("source event %q does not name the claim and grant", msg)
	}
}

// A clone from a PVC in another namespace, under a grant for PVCs.
func TestCloneFromClaimInAnotherNamespace(t *testing.T) {
	c := requireBed(t)
	prod := createNamespace(t, c, "prod")
	dev := createNamespace(t, c, "dev")
	files := map[string]string{"disk.img": "golden-image-v3"}
	provisionSource(t, c, prod, "golden", files)
	grant(t, c, prod, "share-golden", dev, "", "PersistentVolumeClaim", "")

	createClaim(t, c, fromClaim(newClaim(dev, "vm-disk", "1Mi"), prod, "golden"))
	pv := waitBound(t, c, dev, "vm-disk")
	requireFiles(t, volumeDir(pv), files)
	if pv.Annotations["provisioner.crossns.io/reference-grant"] != "share-golden" {
		t.Errorf("PV annotations %v do not name the grant", pv.Annotations)
	}
}

// Grants that do not match in kind, name or from-namespace allow nothing.
func TestMismatchedGrantsDeny(t *testing.T) {
	c := requireBed(t)
	prod := createNamespace(t, c, "prod")
	dev := createNamespace(t, c, "dev")
	other := createNamespace(t, c, "other")
	provisionSource(t, c, prod, "db", map[string]string{"a": "b"})
	snapshotOf(t, c, prod, "nightly", "db")

	grant(t, c, prod, "wrong-kind", dev, "", "PersistentVolumeClaim", "")
	grant(t, c, prod, "wrong-name", dev, snapshotGroup, "VolumeSnapshot", "weekly")
	grant(t, c, prod, "wrong-from", other, snapshotGroup, "VolumeSnapshot", "nightly")

	pvc := createClaim(t, c, fromSnapshot(newClaim(dev, "copy", "1Mi"), prod, "nightly"))
	waitEvent(t, c, dev, "copy", "ReferenceGrantMissing")
	// Give the sidecar a moment in which a wrong grant could act.
	time.Sleep(3 * time.Second)
	got, err := c.kube.CoreV1().PersistentVolumeClaims(dev).Get(testContext(t), "copy", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got.Status.Phase != corev1.ClaimPending {
		t.Fatalf("claim is %s under grants that do not match, want Pending", got.Status.Phase)
	}
	requireNoCreateVolume(t, pvc)
}

// Deleting a grant stops new claims; copies already made stay.
func TestDeletingGrantStopsNewClaimsKeepsCopies(t *testing.T) {
	c := requireBed(t)
	prod := createNamespace(t, c, "prod")
	dev := createNamespace(t, c, "dev")
	files := map[string]string{"data": "v1"}
	provisionSource(t, c, prod, "db", files)
	snapshotOf(t, c, prod, "nightly", "db")
	grant(t, c, prod, "allow-dev", dev, snapshotGroup, "VolumeSnapshot", "")

	createClaim(t, c, fromSnapshot(newClaim(dev, "first", "1Mi"), prod, "nightly"))
	first := waitBound(t, c, dev, "first")

	if err := c.gateway.GatewayV1beta1().ReferenceGrants(prod).Delete(testContext(t), "allow-dev", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	second := createClaim(t, c, fromSnapshot(newClaim(dev, "second", "1Mi"), prod, "nightly"))
	requireRefused(t, c, second, "ReferenceGrantMissing")

	pv, err := c.kube.CoreV1().PersistentVolumes().Get(testContext(t), first.Name, metav1.GetOptions{})
	if err != nil || pv.Status.Phase != corev1.VolumeBound {
		t.Fatalf("the copy made under the grant is gone or unbound: %v %v", err, pv.Status.Phase)
	}
	requireFiles(t, volumeDir(pv), files)
}

// While a cross-namespace clone is in flight, the source claim in prod keeps
// its protection finalizer (deleting it waits); right after, it is released.
func TestSourceProtectedWhileCrossNamespaceCloneInFlight(t *testing.T) {
	c := requireBed(t)
	prod := createNamespace(t, c, "prod")
	dev := createNamespace(t, c, "dev")
	provisionSource(t, c, prod, "golden", map[string]string{"f": "x"})
	grant(t, c, prod, "share", dev, "", "PersistentVolumeClaim", "golden")

	driverControl(t, "/delay", `{"method":"CreateVolume","delay":"6s"}`)
	t.Cleanup(func() { driverControl(t, "/reset", `{}`) })
	createClaim(t, c, fromClaim(newClaim(dev, "clone", "1Mi"), prod, "golden"))

	eventually(t, provisionWait, "the source to carry the protection finalizer", func(ctx context.Context) (bool, string, error) {
		src, err := c.kube.CoreV1().PersistentVolumeClaims(prod).Get(ctx, "golden", metav1.GetOptions{})
		if err != nil {
			return false, err.Error(), nil
		}
		return slices.Contains(src.Finalizers, protectionFinalizer), fmt.Sprint(src.Finalizers), nil
	})
	// The source's owner deletes it mid-clone: it must wait for the clone.
	if err := c.kube.CoreV1().PersistentVolumeClaims(prod).Delete(testContext(t), "golden", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	src, err := c.kube.CoreV1().PersistentVolumeClaims(prod).Get(testContext(t), "golden", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("source claim vanished while a clone of it was in flight: %v", err)
	}
	if !slices.Contains(src.Finalizers, protectionFinalizer) {
		t.Fatalf("source claim lost its protection finalizer mid-clone: %v", src.Finalizers)
	}
	waitBound(t, c, dev, "clone")
	waitClaimGone(t, c, prod, "golden")
}

// With the sidecar's gate off, a cross-namespace claim is refused with an
// Event saying so, and never provisioned (not even as an empty volume).
func TestGateOffRefusesCrossNamespaceClaims(t *testing.T) {
	c := requireBed(t)
	restartSidecar(t, "--feature-gates=CrossNamespaceVolumeDataSource=false")
	prod := createNamespace(t, c, "prod")
	dev := createNamespace(t, c, "dev")
	provisionSource(t, c, prod, "db", map[string]string{"a": "b"})
	grant(t, c, prod, "share", dev, "", "PersistentVolumeClaim", "")

	pvc := createClaim(t, c, fromClaim(newClaim(dev, "copy", "1Mi"), prod, "db"))
	requireRefused(t, c, pvc, "CrossNamespaceDataSourceDisabled", "CrossNamespaceVolumeDataSource")
}

// With the ReferenceGrant CRD missing, the sidecar keeps provisioning other
// claims, tells cross-namespace claims why they wait, and picks grants up as
// soon as the CRD is installed, without a restart.
func TestReferenceGrantCRDInstalledAtRuntime(t *testing.T) {
	c := requireBed(t)
	ctx := testContext(t)
	if err := bed.DeleteReferenceGrantCRD(ctx); err != nil {
		t.Fatalf("deleting the ReferenceGrant CRD: %v", err)
	}
	t.Cleanup(func() {
		if err := bed.ApplyReferenceGrantCRD(context.Background()); err != nil {
			t.Errorf("re-installing the ReferenceGrant CRD: %v", err)
		}
	})
	prod := createNamespace(t, c, "prod")
	dev := createNamespace(t, c, "dev")
	files := map[string]string{"a": "b"}
	// Same-namespace provisioning goes on.
	provisionSource(t, c, prod, "db", files)

	requireRefused(t, c, createClaim(t, c, fromClaim(newClaim(dev, "copy", "1Mi"), prod, "db")), "ReferenceGrantsUnavailable")

	if err := bed.ApplyReferenceGrantCRD(ctx); err != nil {
		t.Fatal(err)
	}
	eventually(t, provisionWait, "the ReferenceGrant API to be served", func(ctx context.Context) (bool, string, error) {
		_, err := c.gateway.GatewayV1beta1().ReferenceGrants(prod).List(ctx, metav1.ListOptions{})
		return err == nil, fmt.Sprint(err), nil
	})
	grant(t, c, prod, "share", dev, "", "PersistentVolumeClaim", "db")
	pv := waitBound(t, c, dev, "copy")
	requireFiles(t, volumeDir(pv), files)
}

// driverControl posts to the test driver's control endpoint.
func driverControl(t *testing.T, path, body string) {
	t.Helper()
	resp, err := http.Post(bed.DriverControlURL()+path, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatalf("driver control %s: %v", path, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("driver control %s: %s", path, resp.Status)
	}
}

// When RBAC forbids reading grants, the sidecar keeps provisioning other
// claims, says why cross-namespace claims wait, and recovers by itself once
// the rule is back.
func TestReferenceGrantRBACForbiddenThenFixed(t *testing.T) {
	c := requireBed(t)
	ctx := testContext(t)
	roles := c.kube.RbacV1().ClusterRoles()
	role, err := roles.Get(ctx, "external-provisioner-runner", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("the bed should run the sidecar with deploy/kubernetes/rbac.yaml: %v", err)
	}
	original := role.DeepCopy()
	restricted := role.DeepCopy()
	restricted.Rules = slices.DeleteFunc(restricted.Rules, func(r rbacv1.PolicyRule) bool {
		return slices.Contains(r.Resources, "referencegrants")
	})
	if _, err := roles.Update(ctx, restricted, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	restoreRole := func() {
		cur, err := roles.Get(context.Background(), original.Name, metav1.GetOptions{})
		if err != nil {
			t.Errorf("reading ClusterRole: %v", err)
			return
		}
		cur.Rules = original.Rules
		if _, err := roles.Update(context.Background(), cur, metav1.UpdateOptions{}); err != nil {
			t.Errorf("restoring ClusterRole: %v", err)
		}
	}
	t.Cleanup(restoreRole)
	// A running watch outlives an RBAC change; a restart makes the sidecar
	// list again, as a fresh deployment with the rule missing would.
	restartSidecar(t)
	prod := createNamespace(t, c, "prod")
	dev := createNamespace(t, c, "dev")
	files := map[string]string{"k": "v"}
	provisionSource(t, c, prod, "db", files) // other provisioning goes on
	grant(t, c, prod, "share", dev, "", "PersistentVolumeClaim", "db")

	pvc := createClaim(t, c, fromClaim(newClaim(dev, "copy", "1Mi"), prod, "db"))
	requireRefused(t, c, pvc, "ReferenceGrantsUnavailable", "referencegrants")

	restoreRole()
	pv := waitBound(t, c, dev, "copy")
	requireFiles(t, volumeDir(pv), files)
}

// The grant is revoked while a CreateVolume under it is still running in the
// driver (it outlived the sidecar's --timeout): the sidecar finishes that
// call, deletes the volume it made, reports ReferenceGrantRevoked, and binds
// nothing — no backend volume is left without a PV.
func TestGrantRevokedWhileCreateVolumeInFlight(t *testing.T) {
	c := requireBed(t)
	ctx := testContext(t)
	restartSidecar(t, "--timeout=1s")
	prod := createNamespace(t, c, "prod")
	dev := createNamespace(t, c, "dev")
	provisionSource(t, c, prod, "db", map[string]string{"secret.csv": "x"})
	grant(t, c, prod, "share", dev, "", "PersistentVolumeClaim", "db")

	driverControl(t, "/delay", `{"method":"CreateVolume","delay":"4s"}`)
	t.Cleanup(func() { driverControl(t, "/reset", `{}`) })
	pvc := createClaim(t, c, fromClaim(newClaim(dev, "copy", "1Mi"), prod, "db"))
	msg := waitEvent(t, c, dev, "copy", "ProvisioningFailed")
	if !strings.Contains(msg, "DeadlineExceeded") {
		t.Fatalf("first attempt should time out in the driver, got %q", msg)
	}

	if err := c.gateway.GatewayV1beta1().ReferenceGrants(prod).Delete(ctx, "share", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	driverControl(t, "/reset", `{}`) // the driver now answers at once
	msg = waitEvent(t, c, dev, "copy", "ReferenceGrantRevoked")

	got, err := c.kube.CoreV1().PersistentVolumeClaims(dev).Get(ctx, "copy", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got.Spec.VolumeName != "" || got.Status.Phase != corev1.ClaimPending {
		t.Fatalf("claim is %s with volume %q after its grant was revoked, want Pending without volume", got.Status.Phase, got.Spec.VolumeName)
	}
	// The driver made the volume (all CreateVolume calls share one name) and
	// was told to delete it: nothing of it is left in the backend.
	calls, raw := createVolumeRecords(t, pvc)
	created := slices.ContainsFunc(raw, func(r csidriver.CallRecord) bool { return r.Code == "OK" })
	if !created {
		t.Fatalf("the driver never completed a CreateVolume for the claim (%d calls): nothing to clean up, the test proves nothing", len(raw))
	}
	m := regexp.MustCompile(`the volume "([^"]+)" was deleted`).FindStringSubmatch(msg)
	if m == nil {
		t.Fatalf("event %q names no volume", msg)
	}
	recs, err := csidriver.ReadCallLog(bed.DriverCallLogPath())
	if err != nil {
		t.Fatal(err)
	}
	deleted := slices.ContainsFunc(csidriver.FilterCalls(recs, "DeleteVolume"), func(r csidriver.CallRecord) bool {
		req := &csi.DeleteVolumeRequest{}
		return r.DecodeRequest(req) == nil && req.VolumeId == m[1] && r.Code == "OK"
	})
	if !deleted {
		t.Fatalf("the driver was never asked to delete volume %s made under the revoked grant", m[1])
	}
	waitBackendVolumeGone(t, calls[0].Name, "made under the revoked grant")
}
