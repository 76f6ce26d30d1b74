package e2e

// Smoke tests of the test bed itself: they prove the bed is a real cluster
// with the KEP-3294 pieces switched on, before any provisioner test relies
// on it. None of them needs the sidecar.

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	snapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	gatewayv1beta1 "sigs.k8s.io/gateway-api/apis/v1beta1"

	"github.com/crossns/external-provisioner/test/cluster"
	"github.com/crossns/external-provisioner/test/csidriver"
)

// storageProvisionerAnnotation is what kube-controller-manager sets on a
// claim to tell external provisioners it is theirs.
const storageProvisionerAnnotation = "volume.kubernetes.io/storage-provisioner"

// claim returns a 1Mi RWO claim spec of a class.
func claim(ns, name string, class *string) *corev1.PersistentVolumeClaim {
	return &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes:      []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			StorageClassName: class,
			Resources: corev1.VolumeResourceRequirements{
				Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Mi")},
			},
		},
	}
}

// A user asks for a volume restored from a snapshot in another namespace:
// with CrossNamespaceVolumeDataSource on, the API server keeps
// dataSourceRef.namespace (with the gate off it would silently drop it).
func TestBedKeepsCrossNamespaceDataSourceRef(t *testing.T) {
	t.Parallel()
	c := requireBed(t)
	ctx := testContext(t)
	ns := createNamespace(t, c, "xns-ref")

	// A class nobody provisions for: this test is about the API server only.
	pvc := claim(ns, "restore", ptr.To("e2e-no-provisioner"))
	pvc.Spec.DataSourceRef = &corev1.TypedObjectReference{
		APIGroup:  ptr.To(snapshotv1.GroupName),
		Kind:      "VolumeSnapshot",
		Name:      "nightly",
		Namespace: ptr.To("prod"),
	}
	if _, err := c.kube.CoreV1().PersistentVolumeClaims(ns).Create(ctx, pvc, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating claim with a cross-namespace dataSourceRef: %v", err)
	}
	got, err := c.kube.CoreV1().PersistentVolumeClaims(ns).Get(ctx, "restore", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("reading the claim back: %v", err)
	}
	ref := got.Spec.DataSourceRef
	if ref == nil || ptr.Deref(ref.Namespace, "") != "prod" {
		t.Fatalf("spec.dataSourceRef = %+v, want namespace %q kept (is the CrossNamespaceVolumeDataSource gate on in kube-apiserver?)", ref, "prod")
	}
	if ref.Kind != "VolumeSnapshot" || ref.Name != "nightly" || ptr.Deref(ref.APIGroup, "") != snapshotv1.GroupName {
		t.Errorf("spec.dataSourceRef = %+v, want the VolumeSnapshot prod/nightly as created", ref)
	}
	// A namespaced reference has no dataSource equivalent, so the API server
	// must not mirror it into spec.dataSource.
	if got.Spec.DataSource != nil {
		t.Errorf("spec.dataSource = %+v, want nil for a cross-namespace dataSourceRef", got.Spec.DataSource)
	}
}

// A user creates a claim of the test driver's class: kube-controller-manager
// hands it to the driver's external provisioner by annotating it.
func TestBedAnnotatesClaimsForTheTestDriver(t *testing.T) {
	t.Parallel()
	c := requireBed(t)
	ctx := testContext(t)
	ns := createNamespace(t, c, "annotate")

	if _, err := c.kube.CoreV1().PersistentVolumeClaims(ns).Create(ctx, claim(ns, "data", ptr.To(cluster.StorageClassName)), metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating claim: %v", err)
	}
	eventually(t, objectWait, "kube-controller-manager to annotate the claim", func(ctx context.Context) (bool, string, error) {
		got, err := c.kube.CoreV1().PersistentVolumeClaims(ns).Get(ctx, "data", metav1.GetOptions{})
		if err != nil {
			return false, "", err
		}
		return got.Annotations[storageProvisionerAnnotation] == driverName, fmt.Sprintf("annotations %v", got.Annotations), nil
	})
}

// The APIs KEP-3294 builds on are served: ReferenceGrant and the
// VolumeSnapshot and VolumeGroupSnapshot kinds.
func TestBedServesReferenceGrantAndSnapshotAPIs(t *testing.T) {
	t.Parallel()
	c := requireBed(t)
	ctx := testContext(t)
	for _, name := range cluster.CRDNames() {
		crd, err := c.apiextensions.ApiextensionsV1().CustomResourceDefinitions().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Errorf("CRD %s: %v", name, err)
			continue
		}
		established := false
		for _, cond := range crd.Status.Conditions {
			if cond.Type == apiextensionsv1.Established && cond.Status == apiextensionsv1.ConditionTrue {
				established = true
			}
		}
		if !established {
			t.Errorf("CRD %s is not Established: %+v", name, crd.Status.Conditions)
		}
	}

	ns := createNamespace(t, c, "grant")
	grant := &gatewayv1beta1.ReferenceGrant{
		ObjectMeta: metav1.ObjectMeta{Name: "allow-dev", Namespace: ns},
		Spec: gatewayv1beta1.ReferenceGrantSpec{
			From: []gatewayv1beta1.ReferenceGrantFrom{{Group: "", Kind: "PersistentVolumeClaim", Namespace: "dev"}},
			To:   []gatewayv1beta1.ReferenceGrantTo{{Group: snapshotv1.GroupName, Kind: "VolumeSnapshot"}},
		},
	}
	if _, err := c.gateway.GatewayV1beta1().ReferenceGrants(ns).Create(ctx, grant, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating a ReferenceGrant: %v", err)
	}
	if _, err := c.gateway.GatewayV1beta1().ReferenceGrants(ns).Get(ctx, "allow-dev", metav1.GetOptions{}); err != nil {
		t.Errorf("reading the ReferenceGrant back: %v", err)
	}
	if _, err := c.snapshots.GroupsnapshotV1().VolumeGroupSnapshots(ns).List(ctx, metav1.ListOptions{}); err != nil {
		t.Errorf("listing VolumeGroupSnapshots: %v", err)
	}
}

// A user snapshots a bound claim of the test driver: the real
// snapshot-controller and csi-snapshotter cut the snapshot, it becomes
// readyToUse, and the driver holds the volume's files under the snapshot
// handle. The volume is created on the driver directly, so this does not
// depend on the sidecar.
func TestBedSnapshotsAVolumeThroughTheRealSnapshotter(t *testing.T) {
	t.Parallel()
	c := requireBed(t)
	ctx := testContext(t)
	ns := createNamespace(t, c, "snap")
	const content = "written before the snapshot\n"

	volumeID := createDriverVolume(t, bedName(ns, "source"), 1<<20)
	volumeFile := filepath.Join(bed.DriverDataDir(), "volumes", volumeID, "hello.txt")
	if err := os.WriteFile(volumeFile, []byte(content), 0o644); err != nil {
		t.Fatalf("writing into the volume: %v", err)
	}

	pvName := bedName(ns, "source")
	pv := &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: pvName},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:                      corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Mi")},
			AccessModes:                   []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			PersistentVolumeReclaimPolicy: corev1.PersistentVolumeReclaimRetain,
			StorageClassName:              "",
			ClaimRef:                      &corev1.ObjectReference{Namespace: ns, Name: "source"},
			PersistentVolumeSource: corev1.PersistentVolumeSource{
				CSI: &corev1.CSIPersistentVolumeSource{Driver: driverName, VolumeHandle: volumeID},
			},
		},
	}
	if _, err := c.kube.CoreV1().PersistentVolumes().Create(ctx, pv, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating PV: %v", err)
	}
	pvc := claim(ns, "source", ptr.To(""))
	pvc.Spec.VolumeName = pvName
	if _, err := c.kube.CoreV1().PersistentVolumeClaims(ns).Create(ctx, pvc, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating claim: %v", err)
	}
	// Delete snapshot, claim and PV in that order before the volume goes.
	t.Cleanup(func() { deleteSnapshotClaimAndPV(t, c, ns, "snap", "source", pvName) })

	eventually(t, objectWait, "the claim to bind to the pre-bound PV", func(ctx context.Context) (bool, string, error) {
		got, err := c.kube.CoreV1().PersistentVolumeClaims(ns).Get(ctx, "source", metav1.GetOptions{})
		if err != nil {
			return false, "", err
		}
		return got.Status.Phase == corev1.ClaimBound, fmt.Sprintf("phase %s", got.Status.Phase), nil
	})

	vs := &snapshotv1.VolumeSnapshot{
		ObjectMeta: metav1.ObjectMeta{Name: "snap", Namespace: ns},
		Spec: snapshotv1.VolumeSnapshotSpec{
			Source:                  snapshotv1.VolumeSnapshotSource{PersistentVolumeClaimName: ptr.To("source")},
			VolumeSnapshotClassName: ptr.To(cluster.SnapshotClassName),
		},
	}
	if _, err := c.snapshots.SnapshotV1().VolumeSnapshots(ns).Create(ctx, vs, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating VolumeSnapshot: %v", err)
	}
	var contentName string
	eventually(t, objectWait, "the VolumeSnapshot to become readyToUse", func(ctx context.Context) (bool, string, error) {
		got, err := c.snapshots.SnapshotV1().VolumeSnapshots(ns).Get(ctx, "snap", metav1.GetOptions{})
		if err != nil {
			return false, "", err
		}
		st := got.Status
		if st == nil {
			return false, "no status", nil
		}
		contentName = ptr.Deref(st.BoundVolumeSnapshotContentName, "")
		if st.Error != nil {
			return false, fmt.Sprintf("error %q", ptr.Deref(st.Error.Message, "")), nil
		}
		return ptr.Deref(st.ReadyToUse, false), fmt.Sprintf("readyToUse %v, content %q", ptr.Deref(st.ReadyToUse, false), contentName), nil
	})

	vsc, err := c.snapshots.SnapshotV1().VolumeSnapshotContents().Get(ctx, contentName, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("reading VolumeSnapshotContent %s: %v", contentName, err)
	}
	handle := ""
	if vsc.Status != nil {
		handle = ptr.Deref(vsc.Status.SnapshotHandle, "")
	}
	if handle == "" {
		t.Fatalf("VolumeSnapshotContent %s has no snapshotHandle: %+v", contentName, vsc.Status)
	}
	snapFile := filepath.Join(bed.DriverDataDir(), "snapshots", handle, "hello.txt")
	got, err := os.ReadFile(snapFile)
	if err != nil {
		t.Fatalf("the driver's snapshot %s lacks the volume's file: %v", handle, err)
	}
	if string(got) != content {
		t.Errorf("%s holds %q, want %q", snapFile, got, content)
	}

	calls, err := csidriver.ReadCallLog(bed.DriverCallLogPath())
	if err != nil {
		t.Fatalf("reading the driver's call log: %v", err)
	}
	created := false
	for _, call := range csidriver.FilterCalls(calls, "CreateSnapshot") {
		created = created || call.Code == "OK"
	}
	if !created {
		t.Errorf("no successful CreateSnapshot in %s", bed.DriverCallLogPath())
	}
}

// deleteSnapshotClaimAndPV removes what the snapshot test made in the API,
// waiting for the snapshot content (and so the driver's snapshot) to go
// before the PV, so the driver volume can be deleted afterwards.
func deleteSnapshotClaimAndPV(t *testing.T, c *clients, ns, snapshot, claimName, pvName string) {
	ctx, cancel := context.WithTimeout(context.Background(), objectWait)
	defer cancel()
	if err := c.snapshots.SnapshotV1().VolumeSnapshots(ns).Delete(ctx, snapshot, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		t.Errorf("deleting VolumeSnapshot: %v", err)
	}
	waitGone(t, ctx, "VolumeSnapshot "+snapshot, func(ctx context.Context) error {
		_, err := c.snapshots.SnapshotV1().VolumeSnapshots(ns).Get(ctx, snapshot, metav1.GetOptions{})
		return err
	})
	if err := c.kube.CoreV1().PersistentVolumeClaims(ns).Delete(ctx, claimName, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		t.Errorf("deleting claim: %v", err)
	}
	if err := c.kube.CoreV1().PersistentVolumes().Delete(ctx, pvName, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		t.Errorf("deleting PV: %v", err)
	}
	waitGone(t, ctx, "PV "+pvName, func(ctx context.Context) error {
		_, err := c.kube.CoreV1().PersistentVolumes().Get(ctx, pvName, metav1.GetOptions{})
		return err
	})
}

// waitGone polls get until it answers NotFound.
func waitGone(t *testing.T, ctx context.Context, what string, get func(ctx context.Context) error) {
	t.Helper()
	for {
		err := get(ctx)
		if apierrors.IsNotFound(err) {
			return
		}
		select {
		case <-ctx.Done():
			t.Errorf("%s still there: %v", what, err)
			return
		case <-time.After(pollInterval):
		}
	}
}
