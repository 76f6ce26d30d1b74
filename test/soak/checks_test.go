package soak

import (
	"testing"

	snapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/crossns/external-provisioner/test/invariants"
)

func TestHeldByPendingRestore(t *testing.T) {
	deleted := metav1.Unix(100, 0)
	snap := snapshotv1.VolumeSnapshot{ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: "snap", DeletionTimestamp: &deleted}}
	restore := func(ns string, made int64, phase corev1.PersistentVolumeClaimPhase) corev1.PersistentVolumeClaim {
		return corev1.PersistentVolumeClaim{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "r", CreationTimestamp: metav1.Unix(made, 0)},
			Spec:       corev1.PersistentVolumeClaimSpec{DataSource: &corev1.TypedLocalObjectReference{APIGroup: ptr.To(snapshotv1.GroupName), Kind: KindSnapshot, Name: "snap"}},
			Status:     corev1.PersistentVolumeClaimStatus{Phase: phase},
		}
	}
	finding := invariants.Finding{Check: invariants.CheckTerminating, Key: "terminating VolumeSnapshot a/snap"}
	for _, tc := range []struct {
		name  string
		claim corev1.PersistentVolumeClaim
		want  bool
	}{
		{"pending restore made after the delete", restore("a", 101, corev1.ClaimPending), true},
		{"pending restore made in the second of the delete: it must get its volume", restore("a", 100, corev1.ClaimPending), false},
		{"pending restore made before the delete", restore("a", 99, corev1.ClaimPending), false},
		{"bound restore", restore("a", 101, corev1.ClaimBound), false},
		{"restore of another namespace", restore("b", 101, corev1.ClaimPending), false},
	} {
		state := &invariants.State{VolumeSnapshots: []snapshotv1.VolumeSnapshot{snap}, Claims: []corev1.PersistentVolumeClaim{tc.claim}}
		if got := heldByPendingRestore(state, finding); got != tc.want {
			t.Errorf("%s: heldByPendingRestore = %v, want %v", tc.name, got, tc.want)
		}
	}
}
