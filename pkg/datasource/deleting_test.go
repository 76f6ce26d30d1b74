package datasource

import (
	"slices"
	"testing"
	"time"

	snapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

const protectionFinalizer = "provisioner.storage.kubernetes.io/cloning-protection"

// finalizerHolder holds sources that carry the protection finalizer.
type finalizerHolder struct{}

func (finalizerHolder) Holds(source metav1.Object) bool {
	return slices.Contains(source.GetFinalizers(), protectionFinalizer)
}

// TestSourceBeingDeleted: a source whose delete was requested stays usable
// only by claims that were waiting on it before, while protection holds it
// (issue 8 item 5); every other claim is refused.
func TestSourceBeingDeleted(t *testing.T) {
	deletedAt := metav1.NewTime(time.Date(2026, 11, 29, 10, 0, 0, 0, time.UTC))
	before, after := metav1.NewTime(deletedAt.Add(-time.Minute)), metav1.NewTime(deletedAt.Add(time.Minute))
	// Timestamps have whole seconds: a claim made in the second of the
	// delete may have been made before it.
	sameSecond := metav1.NewTime(deletedAt.Time)
	tests := []struct {
		name    string
		held    bool
		claimAt metav1.Time
		holder  Holder
		wantOK  bool
	}{
		{name: "held, claim waiting before the delete: usable", held: true, claimAt: before, holder: finalizerHolder{}, wantOK: true},
		{name: "held, claim made in the second of the delete: usable", held: true, claimAt: sameSecond, holder: finalizerHolder{}, wantOK: true},
		{name: "held, claim made after the delete: refused", held: true, claimAt: after, holder: finalizerHolder{}},
		{name: "not held: refused", claimAt: before, holder: finalizerHolder{}},
		{name: "no protection wired: refused", held: true, claimAt: before},
	}
	for _, tc := range tests {
		for _, kind := range []string{SnapshotKind, ClaimKind} {
			t.Run(tc.name+"/"+kind, func(t *testing.T) {
				mark := func(m *metav1.ObjectMeta) {
					m.DeletionTimestamp = &deletedAt
					if tc.held {
						m.Finalizers = append(m.Finalizers, protectionFinalizer)
					}
				}
				w := world{}
				if kind == SnapshotKind {
					snap := readySnapshot("prod", "nightly", func(s *snapshotv1.VolumeSnapshot) { mark(&s.ObjectMeta) })
					w.snapshots, w.contents = []*snapshotv1.VolumeSnapshot{snap}, []*snapshotv1.VolumeSnapshotContent{contentOf(snap)}
				} else {
					src := boundClaim("prod", "nightly", func(c *v1.PersistentVolumeClaim) { mark(&c.ObjectMeta) })
					w.claims, w.volumes = []*v1.PersistentVolumeClaim{src}, []*v1.PersistentVolume{volumeOf(src)}
				}
				r, _ := newResolver(t, w)
				r.Held = tc.holder
				claim := pendingClaim("prod", "copy", kind, "", "nightly")
				claim.CreationTimestamp = tc.claimAt
				_, err := r.Resolve(claim, Request{Bytes: gi, Mode: v1.PersistentVolumeFilesystem})
				if tc.wantOK {
					if err != nil {
						t.Fatalf("Resolve() = %v, want the source usable", err)
					}
					return
				}
				wantFailure(t, err, Invalid, reasonSourceBeingDeleted)
			})
		}
	}
}
