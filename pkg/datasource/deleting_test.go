package datasource

import (
	"slices"
	"testing"
	"time"

	snapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/crossns/external-provisioner/pkg/referencegrant"
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

// TestSnapshotBeingDeletedHeldBySnapshotController: a restore of the
// snapshot's own namespace made before the delete may use the snapshot while
// the stock snapshot-controller holds it for that claim (its own
// source-protection finalizer), even without the sidecar's protection: the
// sidecar had not got to the claim before the delete, and no finalizer can
// be added to an object being deleted. Refusing it left claim and snapshot
// stuck (found by the soak harness).
func TestSnapshotBeingDeletedHeldBySnapshotController(t *testing.T) {
	deletedAt := metav1.NewTime(time.Date(2026, 11, 29, 10, 0, 0, 0, time.UTC))
	before, after := metav1.NewTime(deletedAt.Add(-time.Second)), metav1.NewTime(deletedAt.Add(time.Second))
	tests := []struct {
		name       string
		finalizers []string
		claimNS    string
		claimAt    metav1.Time
		wantOK     bool
	}{
		{name: "same-namespace restore made before the delete", finalizers: []string{SnapshotControllerSourceFinalizer}, claimNS: "prod", claimAt: before, wantOK: true},
		{name: "made after the delete", finalizers: []string{SnapshotControllerSourceFinalizer}, claimNS: "prod", claimAt: after},
		{name: "the controller holds it no more", finalizers: []string{"snapshot.storage.kubernetes.io/volumesnapshot-bound-protection"}, claimNS: "prod", claimAt: before},
		{name: "another namespace's restore: the controller does not hold it for that", finalizers: []string{SnapshotControllerSourceFinalizer}, claimNS: "dev", claimAt: before},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			snap := readySnapshot("prod", "nightly", func(s *snapshotv1.VolumeSnapshot) {
				s.DeletionTimestamp = &deletedAt
				s.Finalizers = tc.finalizers
			})
			r, _ := newResolver(t, world{snapshots: []*snapshotv1.VolumeSnapshot{snap}, contents: []*snapshotv1.VolumeSnapshotContent{contentOf(snap)}})
			r.Held = finalizerHolder{}
			sourceNS := ""
			if tc.claimNS != "prod" {
				sourceNS = "prod"
				grants := referencegrant.NewFake()
				grants.Allow(referencegrant.Reference{FromKind: ClaimKind, FromNamespace: tc.claimNS,
					ToGroup: SnapshotGroup, ToKind: SnapshotKind, ToNamespace: "prod", ToName: "nightly"}, "g")
				r.CrossNamespace, r.Grants = true, grants
			}
			claim := pendingClaim(tc.claimNS, "copy", SnapshotKind, sourceNS, "nightly")
			if sourceNS == "" {
				// kube-apiserver copies a same-namespace dataSourceRef to dataSource.
				claim.Spec.DataSource = &v1.TypedLocalObjectReference{APIGroup: claim.Spec.DataSourceRef.APIGroup, Kind: SnapshotKind, Name: "nightly"}
			}
			claim.CreationTimestamp = tc.claimAt
			_, err := r.Resolve(claim, Request{Bytes: gi, Mode: v1.PersistentVolumeFilesystem})
			if tc.wantOK {
				if err != nil {
					t.Fatalf("Resolve() = %v, want the snapshot usable", err)
				}
				return
			}
			wantFailure(t, err, Invalid, reasonSourceBeingDeleted)
		})
	}
}
