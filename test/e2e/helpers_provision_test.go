package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	snapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/utils/ptr"
	gatewayv1beta1 "sigs.k8s.io/gateway-api/apis/v1beta1"

	"github.com/crossns/external-provisioner/test/csidriver"
)

// The bed's StorageClass and VolumeSnapshotClass (test/cluster).
const (
	testClass     = "csi-test-sc"
	testSnapClass = "csi-test-snapclass"
	// provisionWait bounds how long a claim may take to bind on the bed.
	provisionWait = 90 * time.Second
)

// newClaim is a RWO claim of the bed's class.
func newClaim(ns, name, size string) *corev1.PersistentVolumeClaim {
	return &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes:      []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			StorageClassName: ptr.To(testClass),
			Resources:        corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse(size)}},
		},
	}
}

// fromSnapshot and fromClaim set dataSourceRef; srcNS "" means the claim's own namespace.
func fromSnapshot(pvc *corev1.PersistentVolumeClaim, srcNS, name string) *corev1.PersistentVolumeClaim {
	pvc.Spec.DataSourceRef = &corev1.TypedObjectReference{APIGroup: ptr.To(snapshotv1.GroupName), Kind: "VolumeSnapshot", Name: name}
	if srcNS != "" {
		pvc.Spec.DataSourceRef.Namespace = ptr.To(srcNS)
	}
	return pvc
}

func fromClaim(pvc *corev1.PersistentVolumeClaim, srcNS, name string) *corev1.PersistentVolumeClaim {
	pvc.Spec.DataSourceRef = &corev1.TypedObjectReference{Kind: "PersistentVolumeClaim", Name: name}
	if srcNS != "" {
		pvc.Spec.DataSourceRef.Namespace = ptr.To(srcNS)
	}
	return pvc
}

func createClaim(t *testing.T, c *clients, pvc *corev1.PersistentVolumeClaim) *corev1.PersistentVolumeClaim {
	t.Helper()
	got, err := c.kube.CoreV1().PersistentVolumeClaims(pvc.Namespace).Create(testContext(t), pvc, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("creating claim %s/%s: %v", pvc.Namespace, pvc.Name, err)
	}
	return got
}

// waitBound waits for the claim to be Bound and returns its PV.
func waitBound(t *testing.T, c *clients, ns, name string) *corev1.PersistentVolume {
	t.Helper()
	var pvName string
	eventually(t, provisionWait, fmt.Sprintf("claim %s/%s to be bound", ns, name), func(ctx context.Context) (bool, string, error) {
		pvc, err := c.kube.CoreV1().PersistentVolumeClaims(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error(), nil
		}
		pvName = pvc.Spec.VolumeName
		return pvc.Status.Phase == corev1.ClaimBound, fmt.Sprintf("phase %s; events: %s", pvc.Status.Phase, eventSummary(ctx, c, ns, name)), nil
	})
	pv, err := c.kube.CoreV1().PersistentVolumes().Get(testContext(t), pvName, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("reading PV %s: %v", pvName, err)
	}
	return pv
}

// claimEvents lists the Events of an object in a namespace.
func claimEvents(ctx context.Context, c *clients, ns, name string) ([]corev1.Event, error) {
	list, err := c.kube.CoreV1().Events(ns).List(ctx, metav1.ListOptions{
		FieldSelector: fields.OneTermEqualSelector("involvedObject.name", name).String(),
	})
	if err != nil {
		return nil, err
	}
	return list.Items, nil
}

func eventSummary(ctx context.Context, c *clients, ns, name string) string {
	evs, err := claimEvents(ctx, c, ns, name)
	if err != nil {
		return err.Error()
	}
	var parts []string
	for _, e := range evs {
		parts = append(parts, e.Reason+": "+e.Message)
	}
	return strings.Join(parts, " | ")
}

// waitEvent waits for an Event with the reason on the named object and
// returns its message.
func waitEvent(t *testing.T, c *clients, ns, name, reason string) string {
	t.Helper()
	var msg string
	eventually(t, provisionWait, fmt.Sprintf("event %s on %s/%s", reason, ns, name), func(ctx context.Context) (bool, string, error) {
		evs, err := claimEvents(ctx, c, ns, name)
		if err != nil {
			return false, err.Error(), nil
		}
		for _, e := range evs {
			if e.Reason == reason {
				msg = e.Message
				return true, "", nil
			}
		}
		return false, eventSummary(ctx, c, ns, name), nil
	})
	return msg
}

// createVolumeCalls returns the CreateVolume requests the driver received
// for a claim (the sidecar names volumes pvc-<claim UID>).
func createVolumeCalls(t *testing.T, pvc *corev1.PersistentVolumeClaim) []*csi.CreateVolumeRequest {
	t.Helper()
	reqs, _ := createVolumeRecords(t, pvc)
	return reqs
}

// createVolumeRecords is createVolumeCalls with the raw log records, which
// still show that secrets were sent (their values are redacted).
func createVolumeRecords(t *testing.T, pvc *corev1.PersistentVolumeClaim) ([]*csi.CreateVolumeRequest, []csidriver.CallRecord) {
	t.Helper()
	recs, err := csidriver.ReadCallLog(bed.DriverCallLogPath())
	if err != nil {
		t.Fatalf("reading driver call log: %v", err)
	}
	var out []*csi.CreateVolumeRequest
	var raw []csidriver.CallRecord
	for _, r := range csidriver.FilterCalls(recs, "CreateVolume") {
		req := &csi.CreateVolumeRequest{}
		if err := r.DecodeRequest(req); err != nil {
			t.Fatalf("decoding CreateVolume request: %v", err)
		}
		if req.Name == "pvc-"+string(pvc.UID) {
			out = append(out, req)
			raw = append(raw, r)
		}
	}
	return out, raw
}

// requireNoCreateVolume fails when the driver saw a CreateVolume for the claim.
func requireNoCreateVolume(t *testing.T, pvc *corev1.PersistentVolumeClaim) {
	t.Helper()
	if calls := createVolumeCalls(t, pvc); len(calls) > 0 {
		t.Fatalf("the driver received %d CreateVolume calls for claim %s/%s; a refused claim must never reach it", len(calls), pvc.Namespace, pvc.Name)
	}
}

// volumeDir is where the test driver keeps a PV's files.
func volumeDir(pv *corev1.PersistentVolume) string {
	return filepath.Join(bed.DriverDataDir(), "volumes", pv.Spec.CSI.VolumeHandle)
}

// writeFiles stands in for a pod writing data: there is no kubelet on the bed.
func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func requireFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, want := range files {
		got, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatalf("file %s in volume %s: %v", name, dir, err)
		}
		if string(got) != want {
			t.Fatalf("file %s in volume %s holds %q, want %q", name, dir, got, want)
		}
	}
}

// provisionSource makes a bound claim holding files, the way a user's app would.
func provisionSource(t *testing.T, c *clients, ns, name string, files map[string]string) *corev1.PersistentVolume {
	t.Helper()
	createClaim(t, c, newClaim(ns, name, "1Mi"))
	pv := waitBound(t, c, ns, name)
	writeFiles(t, volumeDir(pv), files)
	return pv
}

// snapshotOf snapshots a claim and waits for the snapshot to be ready.
func snapshotOf(t *testing.T, c *clients, ns, name, claim string) *snapshotv1.VolumeSnapshot {
	t.Helper()
	_, err := c.snapshots.SnapshotV1().VolumeSnapshots(ns).Create(testContext(t), &snapshotv1.VolumeSnapshot{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: snapshotv1.VolumeSnapshotSpec{
			Source:                  snapshotv1.VolumeSnapshotSource{PersistentVolumeClaimName: ptr.To(claim)},
			VolumeSnapshotClassName: ptr.To(testSnapClass),
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("creating snapshot %s/%s: %v", ns, name, err)
	}
	var snap *snapshotv1.VolumeSnapshot
	eventually(t, provisionWait, fmt.Sprintf("snapshot %s/%s to be ready", ns, name), func(ctx context.Context) (bool, string, error) {
		s, err := c.snapshots.SnapshotV1().VolumeSnapshots(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error(), nil
		}
		snap = s
		return s.Status != nil && s.Status.ReadyToUse != nil && *s.Status.ReadyToUse, fmt.Sprintf("%+v", s.Status), nil
	})
	return snap
}

// grant creates a ReferenceGrant in ns from PVCs in fromNS to (group, kind, name).
func grant(t *testing.T, c *clients, ns, name, fromNS, group, kind, toName string) {
	t.Helper()
	g := &gatewayv1beta1.ReferenceGrant{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: gatewayv1beta1.ReferenceGrantSpec{
			From: []gatewayv1beta1.ReferenceGrantFrom{{Group: "", Kind: "PersistentVolumeClaim", Namespace: gatewayv1beta1.Namespace(fromNS)}},
			To:   []gatewayv1beta1.ReferenceGrantTo{{Group: gatewayv1beta1.Group(group), Kind: gatewayv1beta1.Kind(kind)}},
		},
	}
	if toName != "" {
		g.Spec.To[0].Name = ptr.To(gatewayv1beta1.ObjectName(toName))
	}
	if _, err := c.gateway.GatewayV1beta1().ReferenceGrants(ns).Create(testContext(t), g, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating ReferenceGrant %s/%s: %v", ns, name, err)
	}
}

// waitGone waits for a claim to disappear.
func waitClaimGone(t *testing.T, c *clients, ns, name string) {
	t.Helper()
	eventually(t, provisionWait, fmt.Sprintf("claim %s/%s to be gone", ns, name), func(ctx context.Context) (bool, string, error) {
		pvc, err := c.kube.CoreV1().PersistentVolumeClaims(ns).Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return true, "", nil
		}
		if err != nil {
			return false, err.Error(), nil
		}
		return false, fmt.Sprintf("finalizers %v, deleting %v", pvc.Finalizers, pvc.DeletionTimestamp != nil), nil
	})
}

// restartSidecar restarts the bed's sidecar with extra flags for the rest
// of the test, and with its usual flags afterwards.
func restartSidecar(t *testing.T, args ...string) {
	t.Helper()
	if err := bed.RestartProvisioner(testContext(t), args...); err != nil {
		t.Fatalf("restarting the sidecar with %v: %v", args, err)
	}
	t.Cleanup(func() {
		if err := bed.RestartProvisioner(context.Background()); err != nil {
			t.Errorf("restoring the sidecar: %v", err)
		}
	})
}

// requireRefused waits for the Event with reason on the claim, checks that
// its message mentions each of mentions, and that the driver never saw the
// claim. It returns the message.
func requireRefused(t *testing.T, c *clients, pvc *corev1.PersistentVolumeClaim, reason string, mentions ...string) string {
	t.Helper()
	msg := waitEvent(t, c, pvc.Namespace, pvc.Name, reason)
	for _, want := range mentions {
		if !strings.Contains(msg, want) {
			t.Errorf("%s event %q does not mention %q", reason, msg, want)
		}
	}
	requireNoCreateVolume(t, pvc)
	return msg
}
