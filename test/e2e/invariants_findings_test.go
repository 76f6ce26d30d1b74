package e2e

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	snapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	"github.com/crossns/external-provisioner/test/csidriver"
)

// TestInvariantFindings checks the invariant logic on made-up bed states; it
// needs no bed.
func TestInvariantFindings(t *testing.T) {
	const ns, owner = "inv-ns", "TestSomeOwner"
	ledger.addNamespace(ns, owner)
	ledger.mu.Lock()
	ledger.objectOfUID["uid-a"] = "claim " + ns + "/a"
	ledger.mu.Unlock()
	ledger.addDriverVolume("direct-x", "TestDirect")

	now := metav1.Now()
	pv := func(name, handle string, phase corev1.PersistentVolumePhase, policy corev1.PersistentVolumeReclaimPolicy, claim, claimUID string) corev1.PersistentVolume {
		p := corev1.PersistentVolume{
			ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: corev1.PersistentVolumeSpec{
				PersistentVolumeReclaimPolicy: policy,
				PersistentVolumeSource:        corev1.PersistentVolumeSource{CSI: &corev1.CSIPersistentVolumeSource{Driver: driverName, VolumeHandle: handle}},
			},
			Status: corev1.PersistentVolumeStatus{Phase: phase},
		}
		if claim != "" {
			p.Spec.ClaimRef = &corev1.ObjectReference{Namespace: ns, Name: claim, UID: types.UID(claimUID)}
		}
		return p
	}
	vsc := func(name, handle, snap string, policy snapshotv1.DeletionPolicy) snapshotv1.VolumeSnapshotContent {
		return snapshotv1.VolumeSnapshotContent{
			ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: snapshotv1.VolumeSnapshotContentSpec{
				Driver:            driverName,
				DeletionPolicy:    policy,
				VolumeSnapshotRef: corev1.ObjectReference{Namespace: ns, Name: snap, UID: "snap-uid"},
			},
			Status: &snapshotv1.VolumeSnapshotContentStatus{SnapshotHandle: ptr.To(handle)},
		}
	}
	terminatingClaim := corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{
		Namespace: ns, Name: "stuck", UID: "uid-stuck", DeletionTimestamp: &now, Finalizers: []string{"example.com/hold"},
	}}

	tests := []struct {
		name  string
		state bedState
		// want are substrings, one per expected finding, in order.
		want []string
	}{
		{
			name: "consistent",
			state: bedState{
				volumes:   []csidriver.Volume{{ID: "v1", Name: "pvc-uid-a"}},
				pvs:       []corev1.PersistentVolume{pv("pvc-a", "v1", corev1.VolumeBound, corev1.PersistentVolumeReclaimDelete, "a", "uid-a")},
				snapshots: []csidriver.Snapshot{{ID: "s1", Name: "snapshot-x", SourceVolumeID: "v1"}},
				contents:  []snapshotv1.VolumeSnapshotContent{vsc("c1", "s1", "snap", snapshotv1.VolumeSnapshotContentDelete)},
				volSnaps:  []snapshotv1.VolumeSnapshot{{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "snap", UID: "snap-uid"}}},
				claims:    []corev1.PersistentVolumeClaim{{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "a", UID: "uid-a"}}},
			},
		},
		{
			name: "leaked volumes are attributed by name",
			state: bedState{volumes: []csidriver.Volume{
				{ID: "v1", Name: "pvc-uid-a"}, {ID: "v2", Name: "direct-x"}, {ID: "v3", Name: "pvc-unknown"},
			}},
			want: []string{
				`leaked volume v1 (name "pvc-uid-a"`, `claim inv-ns/a of TestSomeOwner`,
				`leaked volume v2 (name "direct-x"`, `created directly on the driver of TestDirect`,
				`leaked volume v3 (name "pvc-unknown"`, `likely owner unknown`,
			},
		},
		{
			name: "lost volume unless the PV is on its way out",
			state: bedState{pvs: []corev1.PersistentVolume{
				pv("pvc-a", "v1", corev1.VolumeBound, corev1.PersistentVolumeReclaimDelete, "a", "uid-a"),
				pv("pvc-b", "v2", corev1.VolumeReleased, corev1.PersistentVolumeReclaimDelete, "b", "uid-b"),
				pv("pvc-c", "v3", corev1.VolumeReleased, corev1.PersistentVolumeReclaimRetain, "", ""),
			}, claims: []corev1.PersistentVolumeClaim{{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "a", UID: "uid-a"}}}},
			want: []string{
				"lost volume v1: PV pvc-a (Bound, reclaim Delete, claim inv-ns/a)", "claim inv-ns/a of TestSomeOwner",
				"lost volume v3: PV pvc-c", "likely owner: PV pvc-c",
				// pvc-b is released, deletion pending: not lost, but its
				// claim is gone and it stays.
				"PV pvc-b (handle v2) of deleted claim inv-ns/b not deleted", "TestSomeOwner",
			},
		},
		{
			name: "snapshots leaked and lost",
			state: bedState{
				volumes:   []csidriver.Volume{{ID: "v1", Name: "pvc-uid-a"}},
				pvs:       []corev1.PersistentVolume{pv("pvc-a", "v1", corev1.VolumeBound, corev1.PersistentVolumeReclaimDelete, "a", "uid-a")},
				claims:    []corev1.PersistentVolumeClaim{{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "a", UID: "uid-a"}}},
				snapshots: []csidriver.Snapshot{{ID: "s1", Name: "snapshot-gone", SourceVolumeID: "v1"}},
				contents:  []snapshotv1.VolumeSnapshotContent{vsc("c2", "s2", "snap", snapshotv1.VolumeSnapshotContentRetain)},
			},
			want: []string{
				`leaked snapshot s1 (name "snapshot-gone", of volume v1)`, "claim inv-ns/a of TestSomeOwner",
				"lost snapshot s2: VolumeSnapshotContent c2 (of VolumeSnapshot inv-ns/snap)", "VolumeSnapshot inv-ns/snap of TestSomeOwner",
			},
		},
		{
			name: "leftovers of the test's namespaces",
			state: bedState{
				volumes:  []csidriver.Volume{{ID: "v1", Name: "pvc-uid-stuck"}, {ID: "v9", Name: "pvc-uid-gone"}},
				pvs:      []corev1.PersistentVolume{pv("pvc-stuck", "v1", corev1.VolumeBound, corev1.PersistentVolumeReclaimDelete, "stuck", "uid-stuck"), pv("pvc-gone", "v9", corev1.VolumeBound, corev1.PersistentVolumeReclaimRetain, "gone", "uid-gone")},
				claims:   []corev1.PersistentVolumeClaim{terminatingClaim},
				volSnaps: []snapshotv1.VolumeSnapshot{{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "s", DeletionTimestamp: &now}}},
			},
			want: []string{
				"claim inv-ns/stuck left Terminating", "example.com/hold",
				"VolumeSnapshot inv-ns/s left Terminating", "TestSomeOwner",
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			for _, f := range append(backendFindings(&tc.state), leftoverFindings(&tc.state, owner, []string{ns})...) {
				got = append(got, f.String())
			}
			if len(got) != len(tc.want)/2 {
				t.Fatalf("findings:\n\t%s\nwant %d", strings.Join(got, "\n\t"), len(tc.want)/2)
			}
			for i, f := range got {
				for _, sub := range tc.want[2*i : 2*i+2] {
					if !strings.Contains(f, sub) {
						t.Errorf("finding %q does not contain %q", f, sub)
					}
				}
			}
			if slices.ContainsFunc(got, func(s string) bool { return strings.Contains(s, "pvc-gone") }) {
				t.Errorf("a Retain PV whose claim is gone is no leftover: %v", got)
			}
		})
	}
}

// TestInvariantCheckSeesLeakedAndLostVolumes makes both kinds of volume
// mismatch on the bed on purpose, checks that the survey finds them and
// names this test, and repairs them before the test's own check runs.
func TestInvariantCheckSeesLeakedAndLostVolumes(t *testing.T) {
	c := requireBed(t)
	ctx := testContext(t)
	ns := createNamespace(t, c, "invariants")
	leakedName := bedName(ns, "leaked")
	leakedID := createDriverVolume(t, leakedName, 1<<20) // no PV: leaked until deleted at cleanup

	lostPV := bedName(ns, "lost")
	_, err := c.kube.CoreV1().PersistentVolumes().Create(ctx, &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: lostPV},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:                      corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Mi")},
			AccessModes:                   []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			PersistentVolumeReclaimPolicy: corev1.PersistentVolumeReclaimRetain,
			ClaimRef:                      &corev1.ObjectReference{Namespace: ns, Name: "nobody"},
			PersistentVolumeSource: corev1.PersistentVolumeSource{
				CSI: &corev1.CSIPersistentVolumeSource{Driver: driverName, VolumeHandle: "no-such-volume-" + ns},
			},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("creating PV: %v", err)
	}
	t.Cleanup(func() {
		if err := c.kube.CoreV1().PersistentVolumes().Delete(context.Background(), lostPV, metav1.DeleteOptions{}); err != nil {
			t.Errorf("deleting PV %s: %v", lostPV, err)
		}
	})

	want := map[string][]string{
		"leaked volume " + leakedID: {leakedID, leakedName, "created directly on the driver of " + t.Name()},
		"lost volume " + lostPV:     {"no-such-volume-" + ns, lostPV, "claim " + ns + "/nobody of " + t.Name()},
	}
	eventually(t, objectWait, "the survey to find the leaked and the lost volume", func(ctx context.Context) (bool, string, error) {
		s, err := survey(ctx, ledger.clients, nil)
		if err != nil {
			return false, err.Error(), nil
		}
		var seen []string
		found := 0
		for _, f := range backendFindings(s) {
			subs, ok := want[f.key]
			if !ok {
				continue
			}
			seen = append(seen, f.String())
			for _, sub := range subs {
				if !strings.Contains(f.String(), sub) {
					return false, "", fmt.Errorf("finding %q does not name %q", f, sub)
				}
			}
			found++
		}
		return found == len(want), strings.Join(seen, "; "), nil
	})
}
