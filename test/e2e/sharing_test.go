package e2e

// Issue 11, live sharing: a claim in another namespace bound to the volume
// of a claim in datasets itself — no copy — when datasets' owner annotated
// the claim and granted the namespace. The bed's sidecar runs with
// CrossNamespaceVolumeSharing=true (test/cluster).

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/crossns/external-provisioner/test/csidriver"
)

const (
	sharingAnn         = "provisioner.crossns.io/sharing"
	shareFromAnn       = "provisioner.crossns.io/share-from"
	sharedFromAnn      = "provisioner.crossns.io/shared-from"
	sharedSourceFinal  = "provisioner.crossns.io/shared-source-protection"
	claimKind          = "PersistentVolumeClaim"
	sourceSize         = "1Mi"
	sharedSourceClaim  = "ml-data"
	sharedSourceAccess = corev1.ReadWriteMany
)

// sharedSource makes the claim datasets/ml-data (ReadWriteMany), annotated
// to be shared with access (nothing when ""), bound, holding files.
func sharedSource(t *testing.T, c *clients, ns string, access corev1.PersistentVolumeAccessMode, files map[string]string) *corev1.PersistentVolume {
	t.Helper()
	pvc := newClaim(ns, sharedSourceClaim, sourceSize)
	pvc.Spec.AccessModes = []corev1.PersistentVolumeAccessMode{sharedSourceAccess}
	if access != "" {
		pvc.Annotations = map[string]string{sharingAnn: string(access)}
	}
	createClaim(t, c, pvc)
	pv := waitBound(t, c, ns, sharedSourceClaim)
	writeFiles(t, volumeDir(pv), files)
	return pv
}

// shareClaim is a claim in ns asking to share from (namespace/claim) with
// the access mode.
func shareClaim(ns, name, from string, mode corev1.PersistentVolumeAccessMode, size string) *corev1.PersistentVolumeClaim {
	pvc := newClaim(ns, name, size)
	pvc.Spec.AccessModes = []corev1.PersistentVolumeAccessMode{mode}
	pvc.Annotations = map[string]string{shareFromAnn: from}
	return pvc
}

// annotateSharing sets (or with "" removes) the sharing annotation of a claim.
func annotateSharing(t *testing.T, c *clients, ns, name string, access corev1.PersistentVolumeAccessMode) {
	t.Helper()
	value := "null"
	if access != "" {
		value = fmt.Sprintf("%q", access)
	}
	patch := fmt.Sprintf(`{"metadata":{"annotations":{%q:%s}}}`, sharingAnn, value)
	if _, err := c.kube.CoreV1().PersistentVolumeClaims(ns).Patch(testContext(t), name, "application/merge-patch+json", []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatalf("annotating %s/%s: %v", ns, name, err)
	}
}

// requireShare checks what a user of a share would: the claim is bound to a
// PV of the source's volume (same driver and handle) made without any
// CreateVolume, read-only as asked, naming its source, and a file written
// through the source's volume is there at the share's handle.
func requireShare(t *testing.T, c *clients, source *corev1.PersistentVolume, pvc *corev1.PersistentVolumeClaim, readOnly bool) *corev1.PersistentVolume {
	t.Helper()
	pv := waitBound(t, c, pvc.Namespace, pvc.Name)
	if pv.Spec.CSI.Driver != source.Spec.CSI.Driver || pv.Spec.CSI.VolumeHandle != source.Spec.CSI.VolumeHandle {
		t.Errorf("PV %s points at %s %s, want the source's %s %s", pv.Name, pv.Spec.CSI.Driver, pv.Spec.CSI.VolumeHandle, source.Spec.CSI.Driver, source.Spec.CSI.VolumeHandle)
	}
	if pv.Spec.CSI.ReadOnly != readOnly {
		t.Errorf("PV %s readOnly = %v, want %v", pv.Name, pv.Spec.CSI.ReadOnly, readOnly)
	}
	want := source.Spec.ClaimRef.Namespace + "/" + source.Spec.ClaimRef.Name
	if got := pv.Annotations[sharedFromAnn]; got != want {
		t.Errorf("PV %s annotation %s = %q, want %q", pv.Name, sharedFromAnn, got, want)
	}
	if got, want := pv.Spec.Capacity[corev1.ResourceStorage], source.Spec.Capacity[corev1.ResourceStorage]; got.Cmp(want) != 0 {
		t.Errorf("PV %s capacity %s, want the source's %s", pv.Name, got.String(), want.String())
	}
	requireNoCreateVolume(t, pvc)
	live := map[string]string{"written-after-" + pvc.Namespace + ".txt": "seen by " + pvc.Namespace}
	writeFiles(t, volumeDir(source), live)
	requireFiles(t, volumeDir(pv), live)
	waitEventWith(t, c, pvc.Namespace, pvc.Name, corev1.EventTypeNormal, "VolumeShared", provisionWait, want, "no copy")
	waitEventWith(t, c, source.Spec.ClaimRef.Namespace, source.Spec.ClaimRef.Name, corev1.EventTypeNormal, "VolumeShared", provisionWait, pvc.Namespace+"/"+pvc.Name)
	return pv
}

// deleteVolumeCalls counts the driver's DeleteVolume calls for a handle.
func deleteVolumeCalls(t *testing.T, handle string) int {
	t.Helper()
	return len(driverCalls(t, "DeleteVolume", func(r csidriver.CallRecord) bool {
		req := &csi.DeleteVolumeRequest{}
		return r.DecodeRequest(req) == nil && req.VolumeId == handle
	}))
}

func TestShareVolumeReadOnlyManyWithTwoNamespaces(t *testing.T) {
	c := requireBed(t)
	datasets := createNamespace(t, c, "datasets")
	files := map[string]string{"train/part-0.csv": "x,y\n1,2\n"}
	src := sharedSource(t, c, datasets, corev1.ReadOnlyMany, files)
	for _, p := range []string{"proj-a", "proj-b"} {
		ns := createNamespace(t, c, p)
		grant(t, c, datasets, "share-"+p, ns, "", claimKind, sharedSourceClaim)
		pvc := createClaim(t, c, shareClaim(ns, "data", datasets+"/"+sharedSourceClaim, corev1.ReadOnlyMany, sourceSize))
		pv := requireShare(t, c, src, pvc, true)
		requireFiles(t, volumeDir(pv), files)
	}
	got, err := c.kube.CoreV1().PersistentVolumeClaims(datasets).Get(testContext(t), sharedSourceClaim, metav1.GetOptions{})
	if err != nil || !slices.Contains(got.Finalizers, sharedSourceFinal) {
		t.Errorf("source claim %v (err %v): want it held by %s while shared", got.Finalizers, err, sharedSourceFinal)
	}
}

func TestShareVolumeReadWriteManyWithTwoNamespaces(t *testing.T) {
	c := requireBed(t)
	datasets := createNamespace(t, c, "datasets")
	src := sharedSource(t, c, datasets, corev1.ReadWriteMany, map[string]string{"app.log": "line 1\n"})
	for _, p := range []string{"analytics", "audit"} {
		ns := createNamespace(t, c, p)
		grant(t, c, datasets, "share-"+p, ns, "", claimKind, "")
		pvc := createClaim(t, c, shareClaim(ns, "logs", datasets+"/"+sharedSourceClaim, corev1.ReadWriteMany, sourceSize))
		pv := requireShare(t, c, src, pvc, false)
		// And the other way: written through the share, seen at the source.
		back := map[string]string{"from-" + p + ".txt": "written by " + p}
		writeFiles(t, volumeDir(pv), back)
		requireFiles(t, volumeDir(src), back)
	}
}

// The owner's grant allows a clone; live access needs the annotation too.
// Adding it binds the waiting claim at once (it is requeued).
func TestShareRefusedWithoutSharingAnnotation(t *testing.T) {
	c := requireBed(t)
	datasets := createNamespace(t, c, "datasets")
	src := sharedSource(t, c, datasets, "", map[string]string{"a": "b"})
	proj := createNamespace(t, c, "proj")
	grant(t, c, datasets, "clones-only", proj, "", claimKind, sharedSourceClaim)
	pvc := createClaim(t, c, shareClaim(proj, "data", datasets+"/"+sharedSourceClaim, corev1.ReadOnlyMany, sourceSize))
	requireRefused(t, c, pvc, "SharingNotAllowed", sharingAnn, "clones-only")
	requirePending(t, c, proj, "data")

	annotateSharing(t, c, datasets, sharedSourceClaim, corev1.ReadOnlyMany)
	requireShare(t, c, src, pvc, true)
}

// Within namespaces the annotation would decide; across them a grant must
// say who. The grant binds the waiting claim at once.
func TestShareRefusedWithoutGrant(t *testing.T) {
	c := requireBed(t)
	datasets := createNamespace(t, c, "datasets")
	src := sharedSource(t, c, datasets, corev1.ReadOnlyMany, map[string]string{"a": "b"})
	proj := createNamespace(t, c, "proj")
	pvc := createClaim(t, c, shareClaim(proj, "data", datasets+"/"+sharedSourceClaim, corev1.ReadOnlyMany, sourceSize))
	requireRefused(t, c, pvc, "ReferenceGrantMissing", datasets, proj, sharedSourceClaim, sharingAnn)
	requirePending(t, c, proj, "data")

	grant(t, c, datasets, "share-proj", proj, "", claimKind, sharedSourceClaim)
	requireShare(t, c, src, pvc, true)
}

// A source of another driver: a static PV of "other.csi.example.com".
func TestShareRefusedForAnotherDriver(t *testing.T) {
	c := requireBed(t)
	ctx := testContext(t)
	datasets := createNamespace(t, c, "datasets")
	pvName := bedName(datasets, "foreign")
	foreign := &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: pvName},
		Spec: corev1.PersistentVolumeSpec{
			AccessModes:                   []corev1.PersistentVolumeAccessMode{corev1.ReadWriteMany},
			Capacity:                      corev1.ResourceList{corev1.ResourceStorage: resource.MustParse(sourceSize)},
			PersistentVolumeReclaimPolicy: corev1.PersistentVolumeReclaimRetain,
			StorageClassName:              "",
			ClaimRef:                      &corev1.ObjectReference{Namespace: datasets, Name: "foreign"},
			PersistentVolumeSource: corev1.PersistentVolumeSource{CSI: &corev1.CSIPersistentVolumeSource{
				Driver: "other.csi.example.com", VolumeHandle: "other-vol-1"}},
		},
	}
	if _, err := c.kube.CoreV1().PersistentVolumes().Create(ctx, foreign, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = c.kube.CoreV1().PersistentVolumes().Delete(context.Background(), pvName, metav1.DeleteOptions{})
	})
	static := newClaim(datasets, "foreign", sourceSize)
	static.Spec.AccessModes = foreign.Spec.AccessModes
	static.Spec.StorageClassName = ptr.To("")
	static.Spec.VolumeName = pvName
	static.Annotations = map[string]string{sharingAnn: string(corev1.ReadOnlyMany)}
	createClaim(t, c, static)
	waitBound(t, c, datasets, "foreign")

	proj := createNamespace(t, c, "proj")
	grant(t, c, datasets, "share-proj", proj, "", claimKind, "foreign")
	pvc := createClaim(t, c, shareClaim(proj, "data", datasets+"/foreign", corev1.ReadOnlyMany, sourceSize))
	requireRefused(t, c, pvc, "ShareRefused", `"other.csi.example.com"`, testClass, "StorageClass of the source's driver")
	requirePending(t, c, proj, "data")
}

// A ReadWriteOnce volume cannot be mounted by many nodes: refused, and the
// message offers a clone instead.
func TestShareRefusedForReadWriteOnceSource(t *testing.T) {
	c := requireBed(t)
	datasets := createNamespace(t, c, "datasets")
	rwo := newClaim(datasets, "db", sourceSize)
	rwo.Annotations = map[string]string{sharingAnn: string(corev1.ReadOnlyMany)}
	createClaim(t, c, rwo)
	waitBound(t, c, datasets, "db")
	proj := createNamespace(t, c, "proj")
	grant(t, c, datasets, "share-proj", proj, "", claimKind, "db")
	pvc := createClaim(t, c, shareClaim(proj, "data", datasets+"/db", corev1.ReadOnlyMany, sourceSize))
	requireRefused(t, c, pvc, "ShareRefused", "[ReadWriteOnce]", "many nodes", "clone")
	requirePending(t, c, proj, "data")
}

// A share is the source's volume: it cannot be larger.
func TestShareRefusedForLargerRequest(t *testing.T) {
	c := requireBed(t)
	datasets := createNamespace(t, c, "datasets")
	sharedSource(t, c, datasets, corev1.ReadOnlyMany, nil)
	proj := createNamespace(t, c, "proj")
	grant(t, c, datasets, "share-proj", proj, "", claimKind, sharedSourceClaim)
	pvc := createClaim(t, c, shareClaim(proj, "data", datasets+"/"+sharedSourceClaim, corev1.ReadOnlyMany, "2Mi"))
	requireRefused(t, c, pvc, "ShareRefused", "asks for 2Mi", "has 1Mi", "at most 1Mi")
	requirePending(t, c, proj, "data")
}

// Deleting the source claim soft-deletes it: Terminating, its volume intact
// and still shared, until the last share's claim is gone; then the claim
// goes and its volume is deleted — once, by the source's PV.
func TestDeletingSharedSourceWaitsForSubordinates(t *testing.T) {
	c := requireBed(t)
	datasets := createNamespace(t, c, "datasets")
	files := map[string]string{"model.bin": "weights"}
	src := sharedSource(t, c, datasets, corev1.ReadOnlyMany, files)
	srcClaim, err := c.kube.CoreV1().PersistentVolumeClaims(datasets).Get(testContext(t), sharedSourceClaim, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	backendName := "pvc-" + string(srcClaim.UID)
	var shares []string
	for _, p := range []string{"proj-a", "proj-b"} {
		ns := createNamespace(t, c, p)
		grant(t, c, datasets, "share-"+p, ns, "", claimKind, sharedSourceClaim)
		pvc := createClaim(t, c, shareClaim(ns, "data", datasets+"/"+sharedSourceClaim, corev1.ReadOnlyMany, sourceSize))
		requireShare(t, c, src, pvc, true)
		shares = append(shares, ns)
	}

	deleteClaim(t, c, datasets, sharedSourceClaim)
	waitEventWith(t, c, datasets, sharedSourceClaim, corev1.EventTypeNormal, "DeletionWaitsForShares", provisionWait, "2 claim(s)", shares[0]+"/data", shares[1]+"/data")
	requireSoftDeleted(t, c, datasets, backendName, src)

	deleteClaim(t, c, shares[0], "data")
	waitClaimGone(t, c, shares[0], "data")
	waitEventWith(t, c, datasets, sharedSourceClaim, corev1.EventTypeNormal, "DeletionWaitsForShares", provisionWait, "1 claim(s)", shares[1]+"/data")
	requireSoftDeleted(t, c, datasets, backendName, src)
	requireFiles(t, volumeDir(src), files)

	deleteClaim(t, c, shares[1], "data")
	waitClaimGone(t, c, datasets, sharedSourceClaim)
	waitBackendVolumeGone(t, backendName, "the source claim was deleted and its last share is gone")
	if n := deleteVolumeCalls(t, src.Spec.CSI.VolumeHandle); n != 1 {
		t.Errorf("%d DeleteVolume calls for %s, want 1 (the source's PV; shares never delete)", n, src.Spec.CSI.VolumeHandle)
	}
}

// requireSoftDeleted: the source claim is Terminating, held by the sharing
// finalizer, and its backend volume exists.
func requireSoftDeleted(t *testing.T, c *clients, ns, backendName string, src *corev1.PersistentVolume) {
	t.Helper()
	got, err := c.kube.CoreV1().PersistentVolumeClaims(ns).Get(testContext(t), sharedSourceClaim, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("the source claim is gone while shared: %v", err)
	}
	if got.DeletionTimestamp == nil || !slices.Contains(got.Finalizers, sharedSourceFinal) {
		t.Errorf("source claim deleting %v, finalizers %v; want Terminating, held by %s", got.DeletionTimestamp != nil, got.Finalizers, sharedSourceFinal)
	}
	if !backendVolumeExists(t, backendName) {
		t.Fatalf("backend volume %s deleted while shared", backendName)
	}
	if n := deleteVolumeCalls(t, src.Spec.CSI.VolumeHandle); n != 0 {
		t.Errorf("%d DeleteVolume calls for the shared volume while shared", n)
	}
}

// Deleting a share's claim deletes its PV, never the volume; the source's
// owner keeps the data, and the source is released once nothing shares it.
func TestDeletingSubordinateKeepsBackendVolume(t *testing.T) {
	c := requireBed(t)
	datasets := createNamespace(t, c, "datasets")
	files := map[string]string{"keep.txt": "still here"}
	src := sharedSource(t, c, datasets, corev1.ReadOnlyMany, files)
	proj := createNamespace(t, c, "proj")
	grant(t, c, datasets, "share-proj", proj, "", claimKind, sharedSourceClaim)
	pvc := createClaim(t, c, shareClaim(proj, "data", datasets+"/"+sharedSourceClaim, corev1.ReadOnlyMany, sourceSize))
	sub := requireShare(t, c, src, pvc, true)

	deleteClaim(t, c, proj, "data")
	ctx, cancel := context.WithTimeout(testContext(t), objectWait)
	defer cancel()
	waitGone(t, ctx, "PV "+sub.Name, func(ctx context.Context) error {
		_, err := c.kube.CoreV1().PersistentVolumes().Get(ctx, sub.Name, metav1.GetOptions{})
		return err
	})
	if _, err := os.Stat(filepath.Join(volumeDir(src), "keep.txt")); err != nil {
		t.Fatalf("the source's data after deleting a share: %v", err)
	}
	requireFiles(t, volumeDir(src), files)
	if n := deleteVolumeCalls(t, src.Spec.CSI.VolumeHandle); n != 0 {
		t.Errorf("deleting a share called DeleteVolume %d times for the shared volume", n)
	}
	eventually(t, objectWait, "the source to be released", func(ctx context.Context) (bool, string, error) {
		got, err := c.kube.CoreV1().PersistentVolumeClaims(datasets).Get(ctx, sharedSourceClaim, metav1.GetOptions{})
		if err != nil {
			return false, err.Error(), nil
		}
		return !slices.Contains(got.Finalizers, sharedSourceFinal) && got.Status.Phase == corev1.ClaimBound, fmt.Sprintf("%s, finalizers %v", got.Status.Phase, got.Finalizers), nil
	})
}

// Revoking the annotation, then the grant, stops new shares at once; the
// existing share keeps its volume, and both owners are told.
func TestRevokingSharingStopsNewShares(t *testing.T) {
	c := requireBed(t)
	datasets := createNamespace(t, c, "datasets")
	src := sharedSource(t, c, datasets, corev1.ReadOnlyMany, map[string]string{"a": "b"})
	proj := createNamespace(t, c, "proj")
	grant(t, c, datasets, "share-proj", proj, "", claimKind, sharedSourceClaim)
	first := createClaim(t, c, shareClaim(proj, "first", datasets+"/"+sharedSourceClaim, corev1.ReadOnlyMany, sourceSize))
	sub := requireShare(t, c, src, first, true)

	annotateSharing(t, c, datasets, sharedSourceClaim, "")
	waitEventWith(t, c, proj, "first", corev1.EventTypeWarning, "ShareRevoked", provisionWait, sharingAnn+" was removed", "keeps the shared volume")
	waitEventWith(t, c, datasets, sharedSourceClaim, corev1.EventTypeWarning, "ShareRevoked", provisionWait, proj+"/first", "new shares are refused")
	second := createClaim(t, c, shareClaim(proj, "second", datasets+"/"+sharedSourceClaim, corev1.ReadOnlyMany, sourceSize))
	requireRefused(t, c, second, "SharingNotAllowed")

	// The grant goes before the annotation comes back, so the claim waiting
	// since the first revocation (requeued when the annotation changes) is
	// refused too.
	if err := c.gateway.GatewayV1beta1().ReferenceGrants(datasets).Delete(testContext(t), "share-proj", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitEventWith(t, c, proj, "first", corev1.EventTypeWarning, "ShareRevoked", provisionWait, "no ReferenceGrant")
	annotateSharing(t, c, datasets, sharedSourceClaim, corev1.ReadOnlyMany)
	third := createClaim(t, c, shareClaim(proj, "third", datasets+"/"+sharedSourceClaim, corev1.ReadOnlyMany, sourceSize))
	requireRefused(t, c, third, "ReferenceGrantMissing")
	requirePending(t, c, proj, "second")
	requirePending(t, c, proj, "third")

	pv, err := c.kube.CoreV1().PersistentVolumes().Get(testContext(t), sub.Name, metav1.GetOptions{})
	if err != nil || pv.Status.Phase != corev1.VolumeBound {
		t.Fatalf("the share made before the revocation: %v, %v; want it kept, Bound", err, pv.Status.Phase)
	}
	requireFiles(t, volumeDir(pv), map[string]string{"a": "b"})
}

// With the gate turned off after a share was made, a new share is refused
// (no volume of its own either: that would not be what was asked), while
// the existing share keeps its volume and still holds the source: deleting
// the source waits for it as before.
func TestShareRefusedWithGateOffKeepsExistingShares(t *testing.T) {
	c := requireBed(t)
	datasets := createNamespace(t, c, "datasets")
	files := map[string]string{"ref.txt": "kept"}
	src := sharedSource(t, c, datasets, corev1.ReadOnlyMany, files)
	srcClaim, err := c.kube.CoreV1().PersistentVolumeClaims(datasets).Get(testContext(t), sharedSourceClaim, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	proj := createNamespace(t, c, "proj")
	grant(t, c, datasets, "share-proj", proj, "", claimKind, sharedSourceClaim)
	early := createClaim(t, c, shareClaim(proj, "early", datasets+"/"+sharedSourceClaim, corev1.ReadOnlyMany, sourceSize))
	sub := requireShare(t, c, src, early, true)

	restartSidecar(t, "--feature-gates=CrossNamespaceVolumeSharing=false")
	late := createClaim(t, c, shareClaim(proj, "late", datasets+"/"+sharedSourceClaim, corev1.ReadOnlyMany, sourceSize))
	requireRefused(t, c, late, "CrossNamespaceVolumeSharingDisabled", "CrossNamespaceVolumeSharing=true", shareFromAnn)
	requirePending(t, c, proj, "late")

	if got := waitBound(t, c, proj, "early"); got.Name != sub.Name {
		t.Errorf("the existing share is bound to %s, want %s", got.Name, sub.Name)
	}
	requireFiles(t, volumeDir(sub), files)
	deleteClaim(t, c, datasets, sharedSourceClaim)
	waitEventWith(t, c, datasets, sharedSourceClaim, corev1.EventTypeNormal, "DeletionWaitsForShares", provisionWait, "1 claim(s)", proj+"/early")
	requireSoftDeleted(t, c, datasets, "pvc-"+string(srcClaim.UID), src)

	deleteClaim(t, c, proj, "late")
	deleteClaim(t, c, proj, "early")
	waitClaimGone(t, c, datasets, sharedSourceClaim)
	waitBackendVolumeGone(t, "pvc-"+string(srcClaim.UID), "the source claim was deleted and its last share is gone")
}

// A Block claim cannot share a Filesystem volume (nor the other way): the
// node would stage it as something it is not.
func TestShareRefusedForVolumeModeMismatch(t *testing.T) {
	c := requireBed(t)
	datasets := createNamespace(t, c, "datasets")
	sharedSource(t, c, datasets, corev1.ReadOnlyMany, nil)
	proj := createNamespace(t, c, "proj")
	grant(t, c, datasets, "share-proj", proj, "", claimKind, sharedSourceClaim)
	pvc := shareClaim(proj, "raw", datasets+"/"+sharedSourceClaim, corev1.ReadOnlyMany, sourceSize)
	pvc.Spec.VolumeMode = ptr.To(corev1.PersistentVolumeBlock)
	createClaim(t, c, pvc)
	requireRefused(t, c, pvc, "ShareRefused", "Filesystem volume", "asks for Block", "volumeMode: Filesystem")
	requirePending(t, c, proj, "raw")
}

// Expanding a share would resize the volume of every claim sharing it: the
// share's PV names an expand secret that does not exist (where
// external-resizer and kubelet stop; the bed runs neither, so what they
// would read is checked), and both claims are told. The class allows
// expansion, so kube-apiserver accepts the request.
func TestShareExpansionRefused(t *testing.T) {
	c := requireBed(t)
	ctx := testContext(t)
	datasets := createNamespace(t, c, "datasets")
	src := sharedSource(t, c, datasets, corev1.ReadWriteMany, nil)
	proj := createNamespace(t, c, "proj")
	grant(t, c, datasets, "share-proj", proj, "", claimKind, sharedSourceClaim)
	className := bedName(proj, "expandable")
	if _, err := c.kube.StorageV1().StorageClasses().Create(ctx, &storagev1.StorageClass{
		ObjectMeta: metav1.ObjectMeta{Name: className}, Provisioner: driverName, AllowVolumeExpansion: ptr.To(true),
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = c.kube.StorageV1().StorageClasses().Delete(context.Background(), className, metav1.DeleteOptions{})
	})
	pvc := shareClaim(proj, "data", datasets+"/"+sharedSourceClaim, corev1.ReadWriteMany, sourceSize)
	pvc.Spec.StorageClassName = ptr.To(className)
	createClaim(t, c, pvc)
	sub := requireShare(t, c, src, pvc, false)

	refusal := &corev1.SecretReference{Namespace: datasets, Name: "shared-volume-expansion-refused"}
	for what, ref := range map[string]*corev1.SecretReference{
		"controller-expand": sub.Spec.CSI.ControllerExpandSecretRef, "node-expand": sub.Spec.CSI.NodeExpandSecretRef,
	} {
		if ref == nil || *ref != *refusal {
			t.Errorf("share PV %s %s secret %v, want %v (the resizer stops there)", sub.Name, what, ref, refusal)
		}
	}
	if _, err := c.kube.CoreV1().Secrets(datasets).Get(ctx, refusal.Name, metav1.GetOptions{}); err == nil {
		t.Errorf("secret %s/%s exists: expansion of a share would not be refused", refusal.Namespace, refusal.Name)
	}

	patch := `{"spec":{"resources":{"requests":{"storage":"2Mi"}}}}`
	if _, err := c.kube.CoreV1().PersistentVolumeClaims(proj).Patch(ctx, "data", "application/merge-patch+json", []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatalf("asking to expand the share: %v", err)
	}
	waitEventWith(t, c, proj, "data", corev1.EventTypeWarning, "SharedVolumeExpansionRefused", provisionWait,
		"2Mi", datasets+"/"+sharedSourceClaim, "shared-volume-expansion-refused")
	waitEventWith(t, c, datasets, sharedSourceClaim, corev1.EventTypeWarning, "SharedVolumeExpansionRefused", provisionWait,
		proj+"/data", "2Mi")
	got, err := c.kube.CoreV1().PersistentVolumes().Get(ctx, sub.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if size := got.Spec.Capacity[corev1.ResourceStorage]; size.Cmp(resource.MustParse(sourceSize)) != 0 {
		t.Errorf("share PV capacity %s after the refused expansion, want %s", size.String(), sourceSize)
	}
}
