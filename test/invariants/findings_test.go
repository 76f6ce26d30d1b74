package invariants

import (
	"slices"
	"strings"
	"testing"

	snapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	"github.com/crossns/external-provisioner/test/csidriver"
)

// TestInvariantFindings checks the findings and their attribution on
// made-up bed states.
func TestInvariantFindings(t *testing.T) {
	const ns, owner = "inv-ns", "TestSomeOwner"
	ledger := NewLedger()
	ledger.AddNamespace(ns, owner)
	ledger.AddObject("uid-a", "claim", ns, "a")
	ledger.AddDriverVolume("direct-x", "TestDirect")

	now := metav1.Now()
	pv := func(name, handle string, phase corev1.PersistentVolumePhase, policy corev1.PersistentVolumeReclaimPolicy, claim, claimUID string) corev1.PersistentVolume {
		p := corev1.PersistentVolume{
			ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: corev1.PersistentVolumeSpec{
				PersistentVolumeReclaimPolicy: policy,
				PersistentVolumeSource:        corev1.PersistentVolumeSource{CSI: &corev1.CSIPersistentVolumeSource{Driver: "file.csi.crossns.io", VolumeHandle: handle}},
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
				Driver:            "file.csi.crossns.io",
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
		state State
		// want are substrings, one per expected finding, in order.
		want []string
	}{
		{
			name: "consistent",
			state: State{
				Volumes:         []csidriver.Volume{{ID: "v1", Name: "pvc-uid-a"}},
				PVs:             []corev1.PersistentVolume{pv("pvc-a", "v1", corev1.VolumeBound, corev1.PersistentVolumeReclaimDelete, "a", "uid-a")},
				Snapshots:       []csidriver.Snapshot{{ID: "s1", Name: "snapshot-x", SourceVolumeID: "v1"}},
				Contents:        []snapshotv1.VolumeSnapshotContent{vsc("c1", "s1", "snap", snapshotv1.VolumeSnapshotContentDelete)},
				VolumeSnapshots: []snapshotv1.VolumeSnapshot{{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "snap", UID: "snap-uid"}}},
				Claims:          []corev1.PersistentVolumeClaim{{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "a", UID: "uid-a"}}},
			},
		},
		{
			name: "leaked volumes are attributed by name",
			state: State{Volumes: []csidriver.Volume{
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
			state: State{PVs: []corev1.PersistentVolume{
				pv("pvc-a", "v1", corev1.VolumeBound, corev1.PersistentVolumeReclaimDelete, "a", "uid-a"),
				pv("pvc-b", "v2", corev1.VolumeReleased, corev1.PersistentVolumeReclaimDelete, "b", "uid-b"),
				pv("pvc-c", "v3", corev1.VolumeReleased, corev1.PersistentVolumeReclaimRetain, "", ""),
			}, Claims: []corev1.PersistentVolumeClaim{{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "a", UID: "uid-a"}}}},
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
			state: State{
				Volumes:   []csidriver.Volume{{ID: "v1", Name: "pvc-uid-a"}},
				PVs:       []corev1.PersistentVolume{pv("pvc-a", "v1", corev1.VolumeBound, corev1.PersistentVolumeReclaimDelete, "a", "uid-a")},
				Claims:    []corev1.PersistentVolumeClaim{{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "a", UID: "uid-a"}}},
				Snapshots: []csidriver.Snapshot{{ID: "s1", Name: "snapshot-gone", SourceVolumeID: "v1"}},
				Contents:  []snapshotv1.VolumeSnapshotContent{vsc("c2", "s2", "snap", snapshotv1.VolumeSnapshotContentRetain)},
			},
			want: []string{
				`leaked snapshot s1 (name "snapshot-gone", of volume v1)`, "claim inv-ns/a of TestSomeOwner",
				"lost snapshot s2: VolumeSnapshotContent c2 (of VolumeSnapshot inv-ns/snap)", "VolumeSnapshot inv-ns/snap of TestSomeOwner",
			},
		},
		{
			name: "leftovers of the test's namespaces",
			state: State{
				Volumes:         []csidriver.Volume{{ID: "v1", Name: "pvc-uid-stuck"}, {ID: "v9", Name: "pvc-uid-gone"}},
				PVs:             []corev1.PersistentVolume{pv("pvc-stuck", "v1", corev1.VolumeBound, corev1.PersistentVolumeReclaimDelete, "stuck", "uid-stuck"), pv("pvc-gone", "v9", corev1.VolumeBound, corev1.PersistentVolumeReclaimRetain, "gone", "uid-gone")},
				Claims:          []corev1.PersistentVolumeClaim{terminatingClaim},
				VolumeSnapshots: []snapshotv1.VolumeSnapshot{{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "s", DeletionTimestamp: &now}}},
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
			for _, f := range append(BackendFindings(&tc.state, ledger), LeftoverFindings(&tc.state, owner, []string{ns})...) {
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
