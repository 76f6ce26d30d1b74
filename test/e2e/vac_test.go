package e2e

// Issue 9, item 3: claims that name a VolumeAttributesClass (storage.k8s.io/v1,
// GA since Kubernetes 1.34) on the bed.

import (
	"context"
	"fmt"
	"maps"
	"strings"
	"testing"

	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"

	"github.com/crossns/external-provisioner/test/csidriver"
)

// A user's claim names an admin's VolumeAttributesClass of the bed's driver:
// it binds, its PV carries the class, and the driver got the class's
// parameters as mutable_parameters in CreateVolume and keeps them on the volume.
func TestClaimWithVolumeAttributesClassBinds(t *testing.T) {
	c := requireBed(t)
	// Created before the namespace, so its cleanup runs after the
	// namespace's (claims and PVs gone, the class no longer in use).
	params := map[string]string{"iops": "3000", "throughput": "125"}
	class := createVolumeAttributesClass(t, c, "vac-gold", driverName, params)
	ns := createNamespace(t, c, "vac")

	claim := newClaim(ns, "fast", "1Mi")
	claim.Spec.VolumeAttributesClassName = ptr.To(class)
	pvc := createClaim(t, c, claim)
	pv := waitBound(t, c, ns, "fast")

	if got := pv.Spec.VolumeAttributesClassName; got == nil || *got != class {
		t.Errorf("PV %s has volumeAttributesClassName %v, want %q", pv.Name, ptrString(got), class)
	}
	calls := createVolumeCalls(t, pvc)
	if len(calls) == 0 {
		t.Fatalf("the driver got no CreateVolume for claim %s/%s", ns, pvc.Name)
	}
	for i, req := range calls {
		if !maps.Equal(req.MutableParameters, params) {
			t.Errorf("CreateVolume %d for the claim has mutable_parameters %v, want the class's %v", i, req.MutableParameters, params)
		}
	}
	vols, _, err := csidriver.ReadDataDir(bed.DriverDataDir())
	if err != nil {
		t.Fatalf("reading the driver's volumes: %v", err)
	}
	found := false
	for _, v := range vols {
		if v.ID == pv.Spec.CSI.VolumeHandle {
			found = true
			if !maps.Equal(v.MutableParameters, params) {
				t.Errorf("driver volume %s has mutable parameters %v, want %v", v.ID, v.MutableParameters, params)
			}
		}
	}
	if !found {
		t.Errorf("the driver has no volume %s", pv.Spec.CSI.VolumeHandle)
	}
}

// A claim naming a class of another driver is refused: the user gets a
// ProvisioningFailed Event that says why, and nothing reaches the driver.
func TestClaimWithVolumeAttributesClassOfAnotherDriverIsRefused(t *testing.T) {
	c := requireBed(t)
	const otherDriver = "other.csi.example.com"
	class := createVolumeAttributesClass(t, c, "vac-other", otherDriver, map[string]string{"iops": "3000"})
	ns := createNamespace(t, c, "vac-other")

	claim := newClaim(ns, "wrong", "1Mi")
	claim.Spec.VolumeAttributesClassName = ptr.To(class)
	pvc := createClaim(t, c, claim)

	msg := waitEvent(t, c, ns, "wrong", "ProvisioningFailed")
	for _, want := range []string{fmt.Sprintf("VolumeAttributesClass %q is for CSI driver %q", class, otherDriver), driverName} {
		if !strings.Contains(msg, want) {
			t.Errorf("ProvisioningFailed Event %q does not say %q", msg, want)
		}
	}
	requireNoCreateVolume(t, pvc)
}

// createVolumeAttributesClass creates a class named after the test (classes
// are cluster-scoped) and deletes it when the test ends, waiting until it is
// gone: kube-controller-manager's vac-protection finalizer keeps it while a
// claim or PV still uses it.
func createVolumeAttributesClass(t *testing.T, c *clients, prefix, driver string, params map[string]string) string {
	t.Helper()
	vac, err := c.kube.StorageV1().VolumeAttributesClasses().Create(testContext(t), &storagev1.VolumeAttributesClass{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "e2e-" + prefix + "-"},
		DriverName: driver,
		Parameters: params,
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("creating VolumeAttributesClass: %v", err)
	}
	name := vac.Name
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), objectWait)
		defer cancel()
		if err := c.kube.StorageV1().VolumeAttributesClasses().Delete(ctx, name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("deleting VolumeAttributesClass %s: %v", name, err)
			return
		}
		err := wait.PollUntilContextCancel(ctx, pollInterval, true, func(ctx context.Context) (bool, error) {
			_, err := c.kube.StorageV1().VolumeAttributesClasses().Get(ctx, name, metav1.GetOptions{})
			return apierrors.IsNotFound(err), nil
		})
		if err != nil {
			t.Errorf("VolumeAttributesClass %s still there %s after deleting it: %v", name, objectWait, err)
		}
	})
	return name
}

func ptrString(s *string) string {
	if s == nil {
		return "<nil>"
	}
	return *s
}
