package e2e

// Issue 8: cross-namespace sources that never lose data, never leak a
// volume, and never let one namespace hold another's. Each test is one of the
// issue's failing inputs; the shared invariant check (invariants_test.go)
// then proves nothing leaked and nothing is left Terminating.

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/crossns/external-provisioner/test/csidriver"
)

// driverCalls returns the driver's calls of method whose request satisfies match.
func driverCalls(t *testing.T, method string, match func(raw csidriver.CallRecord) bool) []csidriver.CallRecord {
	t.Helper()
	recs, err := csidriver.ReadCallLog(bed.DriverCallLogPath())
	if err != nil {
		t.Fatalf("reading driver call log: %v", err)
	}
	var out []csidriver.CallRecord
	for _, r := range csidriver.FilterCalls(recs, method) {
		if match(r) {
			out = append(out, r)
		}
	}
	return out
}

// waitBackendVolumeGone waits until the driver holds no volume named name.
func waitBackendVolumeGone(t *testing.T, name, why string) {
	t.Helper()
	eventually(t, provisionWait, "backend volume "+name+" to be gone ("+why+")", func(context.Context) (bool, string, error) {
		vols, _, err := csidriver.ReadDataDir(bed.DriverDataDir())
		if err != nil {
			return false, err.Error(), nil
		}
		for _, v := range vols {
			if v.Name == name {
				return false, fmt.Sprintf("volume %s (%s) still exists", v.ID, v.Name), nil
			}
		}
		return true, "", nil
	})
}

// backendVolumeExists reports whether the driver holds a volume named name.
func backendVolumeExists(t *testing.T, name string) bool {
	t.Helper()
	vols, _, err := csidriver.ReadDataDir(bed.DriverDataDir())
	if err != nil {
		t.Fatal(err)
	}
	return slices.ContainsFunc(vols, func(v csidriver.Volume) bool { return v.Name == name })
}

// stopSidecarWhile stops the sidecar, runs do, and starts the sidecar again
// with args (restartSidecar's cleanup restores the usual flags).
func stopSidecarWhile(t *testing.T, do func(), args ...string) {
	t.Helper()
	if err := bed.StopProvisioner(testContext(t)); err != nil {
		t.Fatal(err)
	}
	do()
	restartSidecar(t, args...)
}

func deleteClaim(t *testing.T, c *clients, ns, name string) {
	t.Helper()
	if err := c.kube.CoreV1().PersistentVolumeClaims(ns).Delete(testContext(t), name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		t.Fatalf("deleting claim %s/%s: %v", ns, name, err)
	}
}

// TestSnapshotDeletedDuringCrossNamespaceRestoreKeepsItsData: prod deletes
// the snapshot a dev claim is being restored from. The stock snapshot
// controller would delete the content and the backend snapshot under the
// running CreateVolume; the sidecar holds the content until the restore ends,
// then everything the owner deleted goes.
func TestSnapshotDeletedDuringCrossNamespaceRestoreKeepsItsData(t *testing.T) {
	c := requireBed(t)
	ctx := testContext(t)
	prod := createNamespace(t, c, "prod")
	dev := createNamespace(t, c, "dev")
	files := map[string]string{"orders.csv": "1,2,3"}
	provisionSource(t, c, prod, "data", files)
	snap := snapshotOf(t, c, prod, "snap2", "data")
	contentName := *snap.Status.BoundVolumeSnapshotContentName
	content, err := c.snapshots.SnapshotV1().VolumeSnapshotContents().Get(ctx, contentName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	snapHandle := *content.Status.SnapshotHandle
	grant(t, c, prod, "share", dev, snapshotGroup, "VolumeSnapshot", "snap2")

	driverControl(t, "/delay", `{"method":"CreateVolume","delay":"5s"}`)
	t.Cleanup(func() { driverControl(t, "/reset", `{}`) })
	pvc := createClaim(t, c, fromSnapshot(newClaim(dev, "restore", "1Mi"), prod, "snap2"))
	time.Sleep(1500 * time.Millisecond)
	if err := c.snapshots.SnapshotV1().VolumeSnapshots(prod).Delete(ctx, "snap2", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}

	pv := waitBound(t, c, dev, "restore")
	requireFiles(t, volumeDir(pv), files)
	// The restore ended when the driver's successful CreateVolume returned;
	// no DeleteSnapshot of its source may come before that.
	restored := driverCalls(t, "CreateVolume", func(r csidriver.CallRecord) bool {
		req := &csi.CreateVolumeRequest{}
		return r.Code == "OK" && r.DecodeRequest(req) == nil && req.Name == "pvc-"+string(pvc.UID)
	})
	if len(restored) == 0 {
		t.Fatalf("no successful CreateVolume for the restore in the driver's log")
	}
	ended := restored[0].Time.Add(time.Duration(restored[0].DurationMS * float64(time.Millisecond)))
	deletedSnapshot := func(r csidriver.CallRecord) bool {
		req := &csi.DeleteSnapshotRequest{}
		return r.DecodeRequest(req) == nil && req.SnapshotId == snapHandle
	}
	for _, r := range driverCalls(t, "DeleteSnapshot", deletedSnapshot) {
		if r.Time.Before(ended) {
			// The restore was still running: its data was deleted under it.
			t.Errorf("DeleteSnapshot %s was sent at %s, before the restore's CreateVolume ended at %s", snapHandle, r.Time.Format(time.RFC3339Nano), ended.Format(time.RFC3339Nano))
		}
	}
	// Then the owner's delete completes: snapshot, content and backend snapshot.
	waitGone(t, ctx, "VolumeSnapshot prod/snap2", func(ctx context.Context) error {
		_, err := c.snapshots.SnapshotV1().VolumeSnapshots(prod).Get(ctx, "snap2", metav1.GetOptions{})
		return err
	})
	waitGone(t, ctx, "VolumeSnapshotContent "+contentName, func(ctx context.Context) error {
		_, err := c.snapshots.SnapshotV1().VolumeSnapshotContents().Get(ctx, contentName, metav1.GetOptions{})
		return err
	})
	eventually(t, provisionWait, "the backend snapshot to be deleted", func(context.Context) (bool, string, error) {
		_, snaps, err := csidriver.ReadDataDir(bed.DriverDataDir())
		if err != nil {
			return false, err.Error(), nil
		}
		for _, s := range snaps {
			if s.ID == snapHandle {
				return false, "backend snapshot " + snapHandle + " still exists", nil
			}
		}
		return true, "", nil
	})
}

// TestCreateVolumeOutlivingRestartDoesNotLeak: the driver finishes a
// CreateVolume after the sidecar that asked was restarted; the claim is then
// deleted. The new sidecar finds the call in its durable record, repeats it
// to learn the volume, and deletes it (upstream issue #486 leaks it).
func TestCreateVolumeOutlivingRestartDoesNotLeak(t *testing.T) {
	c := requireBed(t)
	dev := createNamespace(t, c, "dev")
	driverControl(t, "/delay", `{"method":"CreateVolume","delay":"4s","ignoreCancel":true}`)
	t.Cleanup(func() { driverControl(t, "/reset", `{}`) })
	pvc := createClaim(t, c, newClaim(dev, "data", "1Mi"))
	time.Sleep(1500 * time.Millisecond)
	// The sidecar goes away with the call running and comes back only after
	// the claim is gone: nothing in memory can remember the call.
	stopSidecarWhile(t, func() {
		deleteClaim(t, c, dev, "data")
		waitClaimGone(t, c, dev, "data")
	})
	name := "pvc-" + string(pvc.UID)
	// The first call ends 4 s after it started and makes the volume.
	eventually(t, provisionWait, "the abandoned call to complete in the driver", func(context.Context) (bool, string, error) {
		done := driverCalls(t, "CreateVolume", func(r csidriver.CallRecord) bool {
			req := &csi.CreateVolumeRequest{}
			return r.Code == "OK" && r.DecodeRequest(req) == nil && req.Name == name
		})
		return len(done) > 0, "no successful CreateVolume yet", nil
	})
	waitBackendVolumeGone(t, name, "its claim was deleted while the call outlived a sidecar restart")
}

// timedOutCrossNamespaceClone starts dev/copy cloning prod/db under a grant,
// with the sidecar's --timeout at 2 s and the driver taking 6 s and finishing
// even when its caller gave up; it returns once the first call timed out.
func timedOutCrossNamespaceClone(t *testing.T, c *clients) (prod, dev string, pvc *corev1.PersistentVolumeClaim) {
	t.Helper()
	restartSidecar(t, "--timeout=2s")
	prod = createNamespace(t, c, "prod")
	dev = createNamespace(t, c, "dev")
	provisionSource(t, c, prod, "db", map[string]string{"f": "x"})
	grant(t, c, prod, "share", dev, "", "PersistentVolumeClaim", "db")
	driverControl(t, "/delay", `{"method":"CreateVolume","delay":"6s","ignoreCancel":true}`)
	t.Cleanup(func() { driverControl(t, "/reset", `{}`) })
	pvc = createClaim(t, c, fromClaim(newClaim(dev, "copy", "1Mi"), prod, "db"))
	if msg := waitEvent(t, c, dev, "copy", "ProvisioningFailed"); !strings.Contains(msg, "DeadlineExceeded") {
		t.Fatalf("first attempt should time out, got %q", msg)
	}
	return prod, dev, pvc
}

// TestTimedOutCreateVolumeWithClaimAndSourceDeletedDoesNotLeak: the call
// outlives --timeout; the consumer deletes the claim and the owner deletes
// the source claim. The source stays until the call is settled (a repeated
// call needs it), the volume made is deleted, then the source goes.
func TestTimedOutCreateVolumeWithClaimAndSourceDeletedDoesNotLeak(t *testing.T) {
	c := requireBed(t)
	prod, dev, pvc := timedOutCrossNamespaceClone(t, c)
	deleteClaim(t, c, dev, "copy")
	deleteClaim(t, c, prod, "db")
	time.Sleep(2 * time.Second)
	// The source must still be there: the call in flight may need it.
	src, err := c.kube.CoreV1().PersistentVolumeClaims(prod).Get(testContext(t), "db", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("source claim gone while a CreateVolume from it was in flight: %v", err)
	}
	if !slices.Contains(src.Finalizers, protectionFinalizer) {
		t.Fatalf("source claim not held while a CreateVolume from it was in flight: %v", src.Finalizers)
	}
	driverControl(t, "/reset", `{}`) // the driver answers promptly from now on
	waitBackendVolumeGone(t, "pvc-"+string(pvc.UID), "its claim was deleted while the call timed out")
	waitClaimGone(t, c, prod, "db")
}

// TestTimedOutCreateVolumeRestartThenRevokedDoesNotLeak: a call timed out,
// the sidecar restarted, then the grant was revoked: the new sidecar repeats
// the recorded call, deletes the volume and says so on the claim.
func TestTimedOutCreateVolumeRestartThenRevokedDoesNotLeak(t *testing.T) {
	c := requireBed(t)
	ctx := testContext(t)
	prod, dev, pvc := timedOutCrossNamespaceClone(t, c)
	// Revoked while the sidecar is away: the new one never saw the grant.
	stopSidecarWhile(t, func() {
		if err := c.gateway.GatewayV1beta1().ReferenceGrants(prod).Delete(ctx, "share", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		driverControl(t, "/reset", `{}`)
	}, "--timeout=2s")
	msg := waitEvent(t, c, dev, "copy", "ReferenceGrantRevoked")
	if !strings.Contains(msg, "was deleted") {
		t.Errorf("event %q does not say the volume was deleted", msg)
	}
	waitBackendVolumeGone(t, "pvc-"+string(pvc.UID), "its grant was revoked after a timeout and a restart")
	got, err := c.kube.CoreV1().PersistentVolumeClaims(dev).Get(ctx, "copy", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got.Spec.VolumeName != "" {
		t.Fatalf("claim bound to %s after its grant was revoked", got.Spec.VolumeName)
	}
}

// TestNamespaceWithoutGrantCannotPinSource: evil (no grant) names prod's
// claim as its source; dev (granted) clones it; prod deletes it. Only dev's
// claim could hold it, and it is bound: the delete completes.
func TestNamespaceWithoutGrantCannotPinSource(t *testing.T) {
	c := requireBed(t)
	prod := createNamespace(t, c, "prod")
	dev := createNamespace(t, c, "dev")
	evil := createNamespace(t, c, "evil")
	provisionSource(t, c, prod, "victim", map[string]string{"f": "x"})
	grant(t, c, prod, "share", dev, "", "PersistentVolumeClaim", "victim")
	pin := createClaim(t, c, fromClaim(newClaim(evil, "pin", "1Mi"), prod, "victim"))
	requireRefused(t, c, pin, "ReferenceGrantMissing")
	createClaim(t, c, fromClaim(newClaim(dev, "copy", "1Mi"), prod, "victim"))
	waitBound(t, c, dev, "copy")
	deleteClaim(t, c, prod, "victim")
	waitClaimGone(t, c, prod, "victim")
	requireNoCreateVolume(t, pin)
}

// TestSourceBeingDeletedStillServesClaimsInFlight: a call from a source
// times out, the owner deletes the source (it stays, held by the finalizer),
// and the claim's retry must still be allowed to finish — refusing it as
// "being deleted" would leave claim and source stuck for ever.
func TestSourceBeingDeletedStillServesClaimsInFlight(t *testing.T) {
	c := requireBed(t)
	restartSidecar(t, "--timeout=2s")
	prod := createNamespace(t, c, "prod")
	dev := createNamespace(t, c, "dev")
	files := map[string]string{"model.bin": "weights"}
	provisionSource(t, c, prod, "golden", files)
	grant(t, c, prod, "share", dev, "", "PersistentVolumeClaim", "golden")
	driverControl(t, "/delay", `{"method":"CreateVolume","delay":"4s"}`)
	t.Cleanup(func() { driverControl(t, "/reset", `{}`) })
	createClaim(t, c, fromClaim(newClaim(dev, "copy", "1Mi"), prod, "golden"))
	if msg := waitEvent(t, c, dev, "copy", "ProvisioningFailed"); !strings.Contains(msg, "DeadlineExceeded") {
		t.Fatalf("first attempt should time out, got %q", msg)
	}
	deleteClaim(t, c, prod, "golden")
	driverControl(t, "/reset", `{}`)
	pv := waitBound(t, c, dev, "copy")
	requireFiles(t, volumeDir(pv), files)
	waitClaimGone(t, c, prod, "golden")
}
