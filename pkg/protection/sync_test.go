package protection

import (
	"context"
	"reflect"
	"slices"
	"testing"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	clienttesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/cache"

	"github.com/crossns/external-provisioner/pkg/datasource"
)

func TestSyncReleasesSource(t *testing.T) {
	const (
		claimKey = "PersistentVolumeClaim/prod/db"
		snapKey  = "VolumeSnapshot/prod/nightly"
	)
	pvc, snap := datasource.ClaimKind, datasource.SnapshotKind
	tests := []struct {
		name string
		key  string
		objs []runtime.Object
		// noSnapshotAPI wires the controller without a snapshot informer.
		noSnapshotAPI bool
		// setup changes grants or records before sync
		setup func(f *fixture)
		// wantFinalizers is the list patched onto the source; nil for no write.
		wantFinalizers []string
		wantRV         string
	}{
		{
			name:           "claim source no claim names any more is released",
			key:            claimKey,
			objs:           []runtime.Object{sourceClaim("prod", "db", ClaimFinalizer)},
			wantFinalizers: []string{}, wantRV: "42",
		},
		{
			name:           "other finalizers stay",
			key:            claimKey,
			objs:           []runtime.Object{sourceClaim("prod", "db", otherFinalizer, ClaimFinalizer, "kubernetes.io/pvc-protection")},
			wantFinalizers: []string{otherFinalizer, "kubernetes.io/pvc-protection"}, wantRV: "42",
		},
		{
			name: "pending clone in another namespace keeps the claim protected",
			key:  claimKey,
			objs: []runtime.Object{
				sourceClaim("prod", "db", ClaimFinalizer),
				user("dev", "copy", pvc, "prod", "db"),
			},
		},
		{
			name: "pending clone in the source's namespace keeps it protected",
			key:  claimKey,
			objs: []runtime.Object{
				sourceClaim("prod", "db", ClaimFinalizer),
				user("prod", "copy", pvc, "prod", "db"),
			},
		},
		{
			name: "one pending clone among finished ones keeps it protected",
			key:  claimKey,
			objs: []runtime.Object{
				sourceClaim("prod", "db", ClaimFinalizer),
				user("dev", "done", pvc, "prod", "db", bound),
				user("qa", "gone", pvc, "prod", "db", deleting),
				user("staging", "copy", pvc, "prod", "db"),
			},
		},
		{
			name: "bound clones do not keep it",
			key:  claimKey,
			objs: []runtime.Object{
				sourceClaim("prod", "db", ClaimFinalizer),
				user("dev", "copy", pvc, "prod", "db", bound),
				user("prod", "copy", pvc, "prod", "db", bound),
			},
			wantFinalizers: []string{}, wantRV: "42",
		},
		{
			name: "pending clone being deleted does not keep it",
			key:  claimKey,
			objs: []runtime.Object{
				sourceClaim("prod", "db", ClaimFinalizer),
				user("dev", "copy", pvc, "prod", "db", deleting),
			},
			wantFinalizers: []string{}, wantRV: "42",
		},
		{
			name: "lost clone does not keep it",
			key:  claimKey,
			objs: []runtime.Object{
				sourceClaim("prod", "db", ClaimFinalizer),
				user("dev", "copy", pvc, "prod", "db", func(c *v1.PersistentVolumeClaim) { c.Status.Phase = v1.ClaimLost }),
			},
			wantFinalizers: []string{}, wantRV: "42",
		},
		{
			name: "pending claims naming other sources do not keep it",
			key:  claimKey,
			objs: []runtime.Object{
				sourceClaim("prod", "db", ClaimFinalizer),
				user("dev", "a", pvc, "prod", "other"),  // another name
				user("dev", "b", pvc, "dev", "db"),      // same name, another namespace
				user("dev", "c", snap, "prod", "db"),    // same name, another kind
				user("dev", "d", "Hello", "prod", "db"), // not a handled kind
			},
			wantFinalizers: []string{}, wantRV: "42",
		},
		{
			name: "claim source without our finalizer is not written",
			key:  claimKey,
			objs: []runtime.Object{sourceClaim("prod", "db", otherFinalizer)},
		},
		{
			name: "missing claim source",
			key:  claimKey,
			objs: []runtime.Object{user("dev", "copy", pvc, "prod", "db", bound)},
		},
		{
			name:           "snapshot source no claim names any more is released",
			key:            snapKey,
			objs:           []runtime.Object{sourceSnapshot("prod", "nightly", otherFinalizer, SnapshotFinalizer)},
			wantFinalizers: []string{otherFinalizer}, wantRV: "43",
		},
		{
			name: "pending restore in another namespace keeps the snapshot protected",
			key:  snapKey,
			objs: []runtime.Object{
				sourceSnapshot("prod", "nightly", SnapshotFinalizer),
				user("dev", "copy", snap, "prod", "nightly"),
			},
		},
		{
			name: "bound restore does not keep the snapshot",
			key:  snapKey,
			objs: []runtime.Object{
				sourceSnapshot("prod", "nightly", SnapshotFinalizer),
				user("dev", "copy", snap, "prod", "nightly", bound),
			},
			wantFinalizers: []string{}, wantRV: "43",
		},
		{
			name: "missing snapshot source",
			key:  snapKey,
			objs: []runtime.Object{user("dev", "copy", snap, "prod", "nightly")},
		},
		{
			name:  "a namespace without a grant cannot hold the source (issue 8 item 4)",
			key:   claimKey,
			setup: func(f *fixture) { f.grants.denied["evil"] = true },
			objs: []runtime.Object{
				sourceClaim("prod", "db", ClaimFinalizer),
				user("evil", "pin", pvc, "prod", "db"),
				user("dev", "copy", pvc, "prod", "db", bound),
			},
			wantFinalizers: []string{}, wantRV: "42",
		},
		{
			name:  "revoked grant: the pending claim no longer holds it",
			key:   claimKey,
			setup: func(f *fixture) { f.grants.denied["dev"] = true },
			objs: []runtime.Object{
				sourceClaim("prod", "db", ClaimFinalizer),
				user("dev", "copy", pvc, "prod", "db"),
			},
			wantFinalizers: []string{}, wantRV: "42",
		},
		{
			name:  "grants unreadable: nothing decided, the source stays held",
			key:   claimKey,
			setup: func(f *fixture) { f.grants.unavailable = true },
			objs: []runtime.Object{
				sourceClaim("prod", "db", ClaimFinalizer),
				user("dev", "copy", pvc, "prod", "db"),
			},
		},
		{
			name: "a claim of another driver cannot hold the source",
			key:  claimKey,
			objs: []runtime.Object{
				sourceClaim("prod", "db", ClaimFinalizer),
				user("prod", "copy", pvc, "prod", "db", func(c *v1.PersistentVolumeClaim) {
					c.Annotations["volume.kubernetes.io/storage-provisioner"] = "other.csi.k8s.io"
				}),
			},
			wantFinalizers: []string{}, wantRV: "42",
		},
		{
			name: "source being deleted: a pending clone made before the delete keeps it held",
			key:  claimKey,
			objs: []runtime.Object{
				deletedAt(sourceClaim("prod", "db", ClaimFinalizer), 100),
				user("dev", "copy", pvc, "prod", "db", madeAt(99)),
				user("prod", "copy", pvc, "prod", "db", madeAt(100)), // the same second
			},
		},
		{
			name: "source being deleted: pending claims made after the delete cannot hold it",
			key:  claimKey,
			objs: []runtime.Object{
				deletedAt(sourceClaim("prod", "db", ClaimFinalizer), 100),
				user("dev", "copy", pvc, "prod", "db", madeAt(101)),
				user("prod", "copy", pvc, "prod", "db", madeAt(160)),
			},
			wantFinalizers: []string{}, wantRV: "42",
		},
		{
			name: "snapshot being deleted: a restore made after the delete cannot hold it",
			key:  snapKey,
			objs: []runtime.Object{
				deletedAt(sourceSnapshot("prod", "nightly", SnapshotFinalizer), 100),
				user("dev", "copy", snap, "prod", "nightly", madeAt(101)),
			},
			wantFinalizers: []string{}, wantRV: "43",
		},
		{
			name:  "a recorded call in flight holds the source after its claim is gone",
			key:   claimKey,
			setup: func(f *fixture) { f.c.cfg.Records = holdsAll{} },
			objs:  []runtime.Object{sourceClaim("prod", "db", ClaimFinalizer)},
		},
		{
			name:          "snapshot source without the snapshot API",
			key:           snapKey,
			objs:          []runtime.Object{sourceSnapshot("prod", "nightly", SnapshotFinalizer)},
			noSnapshotAPI: true,
		},
		{
			name: "unknown kind",
			key:  "Hello/prod/h",
		},
		{
			name: "malformed key",
			key:  "PersistentVolumeClaim/db",
			objs: []runtime.Object{sourceClaim("prod", "db", ClaimFinalizer)},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, !tc.noSnapshotAPI, tc.objs...)
			if tc.setup != nil {
				tc.setup(f)
			}
			if err := f.c.sync(context.Background(), tc.key); err != nil {
				t.Fatalf("sync(%q) error = %v", tc.key, err)
			}

			got := f.patches(t)
			if tc.wantFinalizers == nil {
				if len(got) > 0 {
					t.Errorf("sync() sent %+v, want no write", got)
				}
				return
			}
			kind, ns, name, _ := splitKey(tc.key)
			resource := "persistentvolumeclaims"
			if kind == datasource.SnapshotKind {
				resource = "volumesnapshots"
			}
			want := []patch{{resource: resource, namespace: ns, name: name, finalizers: tc.wantFinalizers, resourceVersion: tc.wantRV}}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("sync() sent %+v, want %+v", got, want)
			}
			stored := f.storedFinalizers(t, kind, ns, name)
			if len(stored) != len(tc.wantFinalizers) || (len(stored) > 0 && !slices.Equal(stored, tc.wantFinalizers)) {
				t.Errorf("stored finalizers = %q, want %q", stored, tc.wantFinalizers)
			}
		})
	}
}

// TestProcessNext checks the queue contract: a released or vanished source
// is forgotten, a failed write is retried with backoff.
func TestProcessNext(t *testing.T) {
	tests := []struct {
		name         string
		patchErr     error
		wantRequeues int
	}{
		{name: "released"},
		{name: "conflict is retried", patchErr: apierrors.NewConflict(schema.GroupResource{Resource: "persistentvolumeclaims"}, "db", nil), wantRequeues: 1},
		{name: "source deleted meanwhile is done", patchErr: apierrors.NewNotFound(schema.GroupResource{Resource: "persistentvolumeclaims"}, "db")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, true, sourceClaim("prod", "db", ClaimFinalizer))
			if tc.patchErr != nil {
				f.client.PrependReactor("update", "persistentvolumeclaims", func(clienttesting.Action) (bool, runtime.Object, error) {
					return true, nil, tc.patchErr
				})
			}
			const key = "PersistentVolumeClaim/prod/db"
			f.c.queue.Add(key)

			if !f.c.processNext(context.Background()) {
				t.Fatal("processNext() = false, want true")
			}
			if got := f.c.queue.NumRequeues(key); got != tc.wantRequeues {
				t.Errorf("requeues = %d, want %d", got, tc.wantRequeues)
			}
			if got := len(f.patches(t)); got != 1 {
				t.Errorf("patches sent = %d, want 1", got)
			}
		})
	}
}

// TestEnqueue checks which informer events put a source key in the queue.
func TestEnqueue(t *testing.T) {
	pvc, snap := datasource.ClaimKind, datasource.SnapshotKind
	tests := []struct {
		name string
		call func(c *Controller)
		want []string
	}{
		{
			name: "claim naming a source in another namespace",
			call: func(c *Controller) { c.enqueueClaimSource(user("dev", "copy", pvc, "prod", "db")) },
			want: []string{"PersistentVolumeClaim/prod/db"},
		},
		{
			name: "deleted claim seen as a tombstone",
			call: func(c *Controller) {
				c.enqueueClaimSource(cache.DeletedFinalStateUnknown{Key: "dev/copy", Obj: user("dev", "copy", snap, "prod", "nightly")})
			},
			want: []string{"VolumeSnapshot/prod/nightly"},
		},
		{
			name: "claim without a source",
			call: func(c *Controller) { c.enqueueClaimSource(sourceClaim("prod", "db")) },
		},
		{
			name: "protected claim, e.g. left behind by a crash",
			call: func(c *Controller) { c.enqueueIfProtected(sourceClaim("prod", "db", ClaimFinalizer), pvc) },
			want: []string{"PersistentVolumeClaim/prod/db"},
		},
		{
			name: "protected snapshot",
			call: func(c *Controller) { c.enqueueIfProtected(sourceSnapshot("prod", "nightly", SnapshotFinalizer), snap) },
			want: []string{"VolumeSnapshot/prod/nightly"},
		},
		{
			name: "unprotected snapshot",
			call: func(c *Controller) { c.enqueueIfProtected(sourceSnapshot("prod", "nightly", otherFinalizer), snap) },
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, true)
			tc.call(f.c)
			var got []string
			for f.c.queue.Len() > 0 {
				k, _ := f.c.queue.Get()
				got = append(got, k)
				f.c.queue.Done(k)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("queued %q, want %q", got, tc.want)
			}
		})
	}
}

// TestFinalizerAddedBackAfterRelease: once the cache shows a released source
// without the finalizer, a finalizer added back by anyone else (e.g. the
// upstream sidecar during an image switch) is released again when unused.
func TestFinalizerAddedBackAfterRelease(t *testing.T) {
	f := newFixture(t, true, sourceClaim("prod", "db", ClaimFinalizer))
	const key = "PersistentVolumeClaim/prod/db"
	ctx := context.Background()
	if err := f.c.sync(ctx, key); err != nil {
		t.Fatalf("first release: %v", err)
	}
	// The informer catches up: the finalizer is gone.
	f.c.forgetRelease(sourceClaim("prod", "db"), datasource.ClaimKind)
	// Someone adds it back; the cache shows it.
	back := sourceClaim("prod", "db", ClaimFinalizer)
	back.ResourceVersion = "2"
	if err := f.c.claimIndex.Update(back); err != nil {
		t.Fatal(err)
	}
	if err := f.c.sync(ctx, key); err != nil {
		t.Fatalf("second release: %v", err)
	}
	if got := len(f.patches(t)); got != 2 {
		t.Fatalf("finalizer patches = %d, want 2 (released twice)", got)
	}
}

// holdsAll is a Records in which every source has a call in flight.
type holdsAll struct{}

func (holdsAll) HoldsSource(string) bool { return true }

// TestSweep: the periodic sweep (--snapshot-orphan-sweep-interval) queues
// every snapshot carrying the finalizer, including one upstream's sidecar
// left, and every snapshot with a held content — nothing else; sync then
// releases them as for any event.
func TestSweep(t *testing.T) {
	held := map[string]string{HeldPolicyAnnotation: "Delete"}
	tests := []struct {
		name string
		objs []runtime.Object
		want []string
	}{
		{name: "nothing protected", objs: []runtime.Object{sourceSnapshot("prod", "a", otherFinalizer)}},
		{
			name: "finalizer left by upstream or a crash",
			objs: []runtime.Object{sourceSnapshot("prod", "a", SnapshotFinalizer), sourceSnapshot("dev", "b", otherFinalizer)},
			want: []string{"VolumeSnapshot/prod/a"},
		},
		{
			name: "held content of a deleted snapshot",
			objs: []runtime.Object{content("c1", "prod", "gone", "Retain", held), content("c2", "prod", "free", "Delete", nil)},
			want: []string{"VolumeSnapshot/prod/gone"},
		},
		{
			name: "the claim finalizer on a snapshot is not ours",
			objs: []runtime.Object{sourceSnapshot("prod", "a", ClaimFinalizer)},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, true, tc.objs...)
			if got := f.c.Sweep(context.Background()); got != len(tc.want) {
				t.Errorf("Sweep() = %d, want %d", got, len(tc.want))
			}
			var got []string
			for f.c.queue.Len() > 0 {
				k, _ := f.c.queue.Get()
				got = append(got, k)
				f.c.queue.Done(k)
			}
			slices.Sort(got)
			if !slices.Equal(got, tc.want) {
				t.Errorf("queued %q, want %q", got, tc.want)
			}
		})
	}
}

// TestSweepReleasesUpstreamFinalizer: a snapshot an upstream sidecar left
// with its finalizer, and no claim waiting, is released by one sweep.
func TestSweepReleasesUpstreamFinalizer(t *testing.T) {
	f := newFixture(t, true, sourceSnapshot("prod", "nightly", "snapshot.storage.kubernetes.io/volumesnapshot-as-source-protection", SnapshotFinalizer))
	f.c.Sweep(context.Background())
	if !f.c.processNext(context.Background()) {
		t.Fatal("processNext() = false")
	}
	want := []string{"snapshot.storage.kubernetes.io/volumesnapshot-as-source-protection"}
	if got := f.storedFinalizers(t, datasource.SnapshotKind, "prod", "nightly"); !slices.Equal(got, want) {
		t.Errorf("finalizers = %q, want %q", got, want)
	}
}

// deletedAt marks a source deleted at second sec.
func deletedAt[T metav1.Object](obj T, sec int64) T {
	t := metav1.Unix(sec, 0)
	obj.SetDeletionTimestamp(&t)
	return obj
}

// madeAt sets a claim's creation time to second sec.
func madeAt(sec int64) func(*v1.PersistentVolumeClaim) {
	return func(c *v1.PersistentVolumeClaim) { c.CreationTimestamp = metav1.Unix(sec, 0) }
}
