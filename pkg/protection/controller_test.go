package protection

import (
	"context"
	"errors"
	"reflect"
	"slices"
	"sync"
	"testing"

	snapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	snapfake "github.com/kubernetes-csi/external-snapshotter/client/v8/clientset/versioned/fake"
	snapinformers "github.com/kubernetes-csi/external-snapshotter/client/v8/informers/externalversions"
	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"
	clienttesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"

	"github.com/crossns/external-provisioner/pkg/datasource"
)

const otherFinalizer = "example.com/keep-me"

// fixture is a controller over unstarted shared informers whose caches the
// test fills, and the fake clients that record its writes.
type fixture struct {
	grants     *fakeGrants
	c          *Controller
	client     *fake.Clientset
	snapClient *snapfake.Clientset
}

// newFixture builds the controller with New, as main does, and preloads both
// the informer caches and the fake API servers with objs. withSnapshots false
// wires it as when the snapshot API is not served.
func newFixture(t *testing.T, withSnapshots bool, objs ...runtime.Object) *fixture {
	t.Helper()
	var core, snaps []runtime.Object
	for _, o := range objs {
		switch o.(type) {
		case *snapshotv1.VolumeSnapshot, *snapshotv1.VolumeSnapshotContent:
			snaps = append(snaps, o)
		default:
			core = append(core, o)
		}
	}
	client := fake.NewClientset(core...)
	snapClient := snapfake.NewSimpleClientset(snaps...)
	claimInformer := informers.NewSharedInformerFactory(client, 0).Core().V1().PersistentVolumeClaims()
	snapFactory := snapinformers.NewSharedInformerFactory(snapClient, 0)
	snapInformer := snapFactory.Snapshot().V1().VolumeSnapshots()
	grants := &fakeGrants{denied: map[string]bool{}}
	c, err := New(Config{DriverName: testDriver, Client: client, SnapClient: snapClient, Claims: claimInformer, Grants: grants})
	if err != nil {
		t.Fatalf("New() error = %v", err)
	}
	if withSnapshots {
		c.SnapshotsAvailable(snapFactory)
		c.ContentsAvailable(snapFactory)
		// The test fills the caches itself: they count as synced.
		c.snapshots.Load().synced = []cache.InformerSynced{func() bool { return true }}
	}
	t.Cleanup(c.queue.ShutDown)
	for _, o := range core {
		if err := claimInformer.Informer().GetIndexer().Add(o); err != nil {
			t.Fatal(err)
		}
	}
	for _, o := range snaps {
		indexer := snapInformer.Informer().GetIndexer()
		if _, ok := o.(*snapshotv1.VolumeSnapshotContent); ok {
			indexer = snapFactory.Snapshot().V1().VolumeSnapshotContents().Informer().GetIndexer()
		}
		if err := indexer.Add(o); err != nil {
			t.Fatal(err)
		}
	}
	return &fixture{c: c, client: client, snapClient: snapClient, grants: grants}
}

const testDriver = "test.csi.k8s.io"

// fakeGrants allows every cross-namespace claim except those from namespaces
// in denied; grants unreadable when unavailable is set.
type fakeGrants struct {
	denied      map[string]bool
	unavailable bool
}

func (g *fakeGrants) Authorize(claim *v1.PersistentVolumeClaim, ref datasource.Ref) (string, error) {
	if g.unavailable {
		return "", &datasource.Error{Kind: datasource.Denied, DenialReason: "grants_unavailable", Undecided: true, Message: "cannot decide"}
	}
	if g.denied[claim.Namespace] {
		return "", &datasource.Error{Kind: datasource.Denied, DenialReason: "no_grant", Message: "no grant"}
	}
	return "allow", nil
}

// patch is a finalizer write the controller sent: an update of the source
// guarded by the resourceVersion it was read at.
type patch struct {
	resource, namespace, name string
	finalizers                []string
	resourceVersion           string
}

// patches returns the finalizer writes sent through both clients, checking
// that each is an update (the verb upstream's RBAC grants on sources).
func (f *fixture) patches(t *testing.T) []patch {
	t.Helper()
	var out []patch
	for _, a := range append(f.client.Actions(), f.snapClient.Actions()...) {
		if a.GetVerb() != "update" {
			if a.GetVerb() != "get" && a.GetVerb() != "list" && a.GetVerb() != "watch" {
				t.Errorf("unexpected write %s %s", a.GetVerb(), a.GetResource().Resource)
			}
			continue
		}
		m, err := meta(a.(clienttesting.UpdateAction).GetObject())
		if err != nil {
			t.Fatal(err)
		}
		p := patch{resource: a.GetResource().Resource, namespace: a.GetNamespace(), name: m.GetName(),
			finalizers: m.GetFinalizers(), resourceVersion: m.GetResourceVersion()}
		if p.finalizers == nil {
			p.finalizers = []string{}
		}
		out = append(out, p)
	}
	return out
}

// storedFinalizers returns the finalizers of the object in the fake API server.
func (f *fixture) storedFinalizers(t *testing.T, kind, ns, name string) []string {
	t.Helper()
	var (
		m   metav1.Object
		err error
	)
	ctx := context.Background()
	switch kind {
	case datasource.ClaimKind:
		m, err = f.client.CoreV1().PersistentVolumeClaims(ns).Get(ctx, name, metav1.GetOptions{})
	case datasource.SnapshotKind:
		m, err = f.snapClient.SnapshotV1().VolumeSnapshots(ns).Get(ctx, name, metav1.GetOptions{})
	}
	if err != nil {
		t.Fatalf("reading %s %s/%s: %v", kind, ns, name, err)
	}
	return m.GetFinalizers()
}

func sourceClaim(ns, name string, finalizers ...string) *v1.PersistentVolumeClaim {
	return &v1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, ResourceVersion: "42", Finalizers: finalizers},
		Spec:       v1.PersistentVolumeClaimSpec{VolumeName: "pv-" + name},
		Status:     v1.PersistentVolumeClaimStatus{Phase: v1.ClaimBound},
	}
}

func sourceSnapshot(ns, name string, finalizers ...string) *snapshotv1.VolumeSnapshot {
	return &snapshotv1.VolumeSnapshot{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, ResourceVersion: "43", Finalizers: finalizers},
		Spec: snapshotv1.VolumeSnapshotSpec{
			Source: snapshotv1.VolumeSnapshotSource{PersistentVolumeClaimName: ptr.To("origin")},
		},
	}
}

// user is a claim in ns named name whose dataSourceRef names kind
// sourceNS/source; mods change its phase and the like.
func user(ns, name, kind, sourceNS, source string, mods ...func(*v1.PersistentVolumeClaim)) *v1.PersistentVolumeClaim {
	ref := &v1.TypedObjectReference{Kind: kind, Name: source, Namespace: ptr.To(sourceNS)}
	if kind == datasource.SnapshotKind {
		ref.APIGroup = ptr.To(datasource.SnapshotGroup)
	}
	c := &v1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name,
			Annotations: map[string]string{"volume.kubernetes.io/storage-provisioner": testDriver}},
		Spec:   v1.PersistentVolumeClaimSpec{DataSourceRef: ref},
		Status: v1.PersistentVolumeClaimStatus{Phase: v1.ClaimPending},
	}
	for _, m := range mods {
		m(c)
	}
	return c
}

func bound(c *v1.PersistentVolumeClaim) {
	c.Status.Phase = v1.ClaimBound
	c.Spec.VolumeName = "pv-" + c.Name
}

func deleting(c *v1.PersistentVolumeClaim) {
	c.DeletionTimestamp = &metav1.Time{}
	c.Finalizers = []string{"kubernetes.io/pvc-protection"}
}

func TestIndexBySource(t *testing.T) {
	tests := []struct {
		name string
		obj  any
		want []string
	}{
		{name: "not a claim", obj: &v1.PersistentVolume{}},
		{name: "claim without a source", obj: &v1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Namespace: "dev", Name: "empty"}}},
		{
			name: "claim of a volume populator",
			obj: &v1.PersistentVolumeClaim{
				ObjectMeta: metav1.ObjectMeta{Namespace: "dev", Name: "hello"},
				Spec: v1.PersistentVolumeClaimSpec{DataSourceRef: &v1.TypedObjectReference{
					APIGroup: ptr.To("hello.example.com"), Kind: "Hello", Name: "h",
				}},
			},
		},
		{
			name: "legacy dataSource in the claim's namespace",
			obj: &v1.PersistentVolumeClaim{
				ObjectMeta: metav1.ObjectMeta{Namespace: "dev", Name: "copy"},
				Spec:       v1.PersistentVolumeClaimSpec{DataSource: &v1.TypedLocalObjectReference{Kind: datasource.ClaimKind, Name: "db"}},
			},
			want: []string{"PersistentVolumeClaim/dev/db"},
		},
		{
			name: "snapshot in another namespace",
			obj:  user("dev", "copy", datasource.SnapshotKind, "prod", "nightly"),
			want: []string{"VolumeSnapshot/prod/nightly"},
		},
		{
			name: "claim in another namespace",
			obj:  user("dev", "copy", datasource.ClaimKind, "prod", "db"),
			want: []string{"PersistentVolumeClaim/prod/db"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := IndexBySource(tc.obj)
			if err != nil || !slices.Equal(got, tc.want) {
				t.Errorf("IndexBySource() = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

func TestProtect(t *testing.T) {
	tests := []struct {
		name   string
		source runtime.Object
		kind   string
		// wantPatch is the finalizer list written; nil for no write.
		wantPatch []string
		wantRV    string
	}{
		{
			name:      "claim without finalizers",
			source:    sourceClaim("prod", "db"),
			kind:      datasource.ClaimKind,
			wantPatch: []string{ClaimFinalizer}, wantRV: "42",
		},
		{
			name:      "claim with another finalizer keeps it",
			source:    sourceClaim("prod", "db", otherFinalizer),
			kind:      datasource.ClaimKind,
			wantPatch: []string{otherFinalizer, ClaimFinalizer}, wantRV: "42",
		},
		{
			name:   "claim already protected is not written",
			source: sourceClaim("prod", "db", otherFinalizer, ClaimFinalizer),
			kind:   datasource.ClaimKind,
		},
		{
			name:      "snapshot without finalizers",
			source:    sourceSnapshot("prod", "nightly"),
			kind:      datasource.SnapshotKind,
			wantPatch: []string{SnapshotFinalizer}, wantRV: "43",
		},
		{
			name:      "snapshot with the snapshot controller's finalizer keeps it",
			source:    sourceSnapshot("prod", "nightly", "snapshot.storage.kubernetes.io/volumesnapshot-as-source-protection"),
			kind:      datasource.SnapshotKind,
			wantPatch: []string{"snapshot.storage.kubernetes.io/volumesnapshot-as-source-protection", SnapshotFinalizer}, wantRV: "43",
		},
		{
			name:   "snapshot already protected is not written",
			source: sourceSnapshot("prod", "nightly", SnapshotFinalizer),
			kind:   datasource.SnapshotKind,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, true, tc.source)
			m := tc.source.(metav1.Object)
			src := &datasource.Source{
				Ref:    datasource.Ref{Kind: tc.kind, Namespace: m.GetNamespace(), Name: m.GetName()},
				Object: tc.source,
			}

			if err := f.c.Protect(context.Background(), nil, src); err != nil {
				t.Fatalf("Protect() error = %v", err)
			}

			got := f.patches(t)
			if tc.wantPatch == nil {
				if len(got) > 0 {
					t.Errorf("Protect() sent %+v, want no write", got)
				}
				return
			}
			resource := "persistentvolumeclaims"
			if tc.kind == datasource.SnapshotKind {
				resource = "volumesnapshots"
			}
			want := []patch{{resource: resource, namespace: "prod", name: m.GetName(), finalizers: tc.wantPatch, resourceVersion: tc.wantRV}}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("Protect() sent %+v, want %+v", got, want)
			}
			if stored := f.storedFinalizers(t, tc.kind, "prod", m.GetName()); !slices.Equal(stored, tc.wantPatch) {
				t.Errorf("stored finalizers = %q, want %q", stored, tc.wantPatch)
			}
		})
	}
}

func TestProtectRejectsObjectWithoutMetadata(t *testing.T) {
	tests := []struct {
		name   string
		object any
	}{
		{name: "nil object", object: nil},
		{name: "not an API object", object: "prod/db"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, true)
			src := &datasource.Source{Ref: datasource.Ref{Kind: datasource.ClaimKind, Namespace: "prod", Name: "db"}, Object: tc.object}
			if err := f.c.Protect(context.Background(), nil, src); err == nil {
				t.Error("Protect() error = nil, want an error")
			}
			if got := f.patches(t); len(got) > 0 {
				t.Errorf("Protect() sent %+v, want no write", got)
			}
		})
	}
}

// TestProtectWrites checks how many writes Protect and release make when
// many claims name one source and the cache lags behind the writes.
func TestProtectWrites(t *testing.T) {
	const claimKey = "PersistentVolumeClaim/prod/db"
	pvcRef := datasource.Ref{Kind: datasource.ClaimKind, Namespace: "prod", Name: "db"}
	protect := func(obj *v1.PersistentVolumeClaim) func(*fixture) error {
		return func(f *fixture) error {
			return f.c.Protect(context.Background(), nil, &datasource.Source{Ref: pvcRef, Object: obj})
		}
	}
	release := func(f *fixture) error { return f.c.sync(context.Background(), claimKey) }
	withUID := func(c *v1.PersistentVolumeClaim, uid types.UID) *v1.PersistentVolumeClaim {
		c.UID = uid
		return c
	}
	withRV := func(c *v1.PersistentVolumeClaim, rv string) *v1.PersistentVolumeClaim {
		c.ResourceVersion = rv
		return c
	}
	stale := withUID(sourceClaim("prod", "db"), "uid-1")

	tests := []struct {
		name string
		// server is the source as the API server has it; the cache holds
		// the same unless a step passes another version.
		server *v1.PersistentVolumeClaim
		steps  []func(*fixture) error
		// conflicts is how many patches the API server refuses with a conflict first.
		conflicts int
		want      []patch
		wantErr   bool
	}{
		{
			name:   "fan-out: claims restoring one source write once",
			server: withUID(sourceClaim("prod", "db"), "uid-1"),
			steps:  []func(*fixture) error{protect(stale), protect(stale), protect(stale)},
			want:   []patch{{"persistentvolumeclaims", "prod", "db", []string{ClaimFinalizer}, "42"}},
		},
		{
			name:   "a re-created source of the same name is protected again",
			server: withUID(sourceClaim("prod", "db"), "uid-2"),
			steps:  []func(*fixture) error{protect(stale), protect(withUID(sourceClaim("prod", "db"), "uid-2"))},
			want: []patch{
				{"persistentvolumeclaims", "prod", "db", []string{ClaimFinalizer}, "42"},
				{"persistentvolumeclaims", "prod", "db", []string{ClaimFinalizer}, "42"},
			},
		},
		{
			name:   "released source whose cache still shows the finalizer is protected again",
			server: withUID(sourceClaim("prod", "db", ClaimFinalizer), "uid-1"),
			steps: []func(*fixture) error{
				release,
				protect(withUID(sourceClaim("prod", "db", ClaimFinalizer), "uid-1")),
			},
			want: []patch{
				{"persistentvolumeclaims", "prod", "db", []string{}, "42"},
				{"persistentvolumeclaims", "prod", "db", []string{ClaimFinalizer}, "42"},
			},
		},
		{
			name:   "release is not repeated while the cache lags",
			server: withUID(sourceClaim("prod", "db", ClaimFinalizer), "uid-1"),
			steps:  []func(*fixture) error{release, release},
			want:   []patch{{"persistentvolumeclaims", "prod", "db", []string{}, "42"}},
		},
		{
			name:      "conflict: the source is read again and patched at its current version",
			server:    withRV(withUID(sourceClaim("prod", "db", otherFinalizer), "uid-1"), "57"),
			steps:     []func(*fixture) error{protect(withRV(withUID(sourceClaim("prod", "db"), "uid-1"), "41"))},
			conflicts: 1,
			want: []patch{
				{"persistentvolumeclaims", "prod", "db", []string{ClaimFinalizer}, "41"},
				{"persistentvolumeclaims", "prod", "db", []string{otherFinalizer, ClaimFinalizer}, "57"},
			},
		},
		{
			name:      "conflict: the current source already carries the finalizer",
			server:    withRV(withUID(sourceClaim("prod", "db", ClaimFinalizer), "uid-1"), "57"),
			steps:     []func(*fixture) error{protect(withRV(withUID(sourceClaim("prod", "db"), "uid-1"), "41")), protect(stale)},
			conflicts: 1,
			want:      []patch{{"persistentvolumeclaims", "prod", "db", []string{ClaimFinalizer}, "41"}},
		},
		{
			name:      "conflict twice is returned for a retry",
			server:    withRV(withUID(sourceClaim("prod", "db"), "uid-1"), "57"),
			steps:     []func(*fixture) error{protect(withRV(withUID(sourceClaim("prod", "db"), "uid-1"), "41"))},
			conflicts: 2,
			want: []patch{
				{"persistentvolumeclaims", "prod", "db", []string{ClaimFinalizer}, "41"},
				{"persistentvolumeclaims", "prod", "db", []string{ClaimFinalizer}, "57"},
			},
			wantErr: true,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, true, tc.server)
			conflicts := tc.conflicts
			f.client.PrependReactor("update", "persistentvolumeclaims", func(clienttesting.Action) (bool, runtime.Object, error) {
				if conflicts == 0 {
					return false, nil, nil
				}
				conflicts--
				return true, nil, apierrors.NewConflict(schema.GroupResource{Resource: "persistentvolumeclaims"}, "db", errors.New("the object has been modified"))
			})
			var err error
			for i, step := range tc.steps {
				if err = step(f); err != nil && i < len(tc.steps)-1 {
					t.Fatalf("step %d: %v", i, err)
				}
			}
			if (err != nil) != tc.wantErr {
				t.Errorf("last step error = %v, want error: %v", err, tc.wantErr)
			}
			if got := f.patches(t); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("patches = %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

// TestProtectConcurrentFanOut runs Protect for many claims of one source at
// once, as provisioning workers do, and expects one write.
func TestProtectConcurrentFanOut(t *testing.T) {
	tests := []struct {
		name    string
		claims  int
		source  runtime.Object
		wantRes string
	}{
		{name: "one claim", claims: 1, source: sourceClaim("prod", "db"), wantRes: "persistentvolumeclaims"},
		{name: "fifty claims of a claim", claims: 50, source: sourceClaim("prod", "db"), wantRes: "persistentvolumeclaims"},
		{name: "fifty claims of a snapshot", claims: 50, source: sourceSnapshot("prod", "nightly"), wantRes: "volumesnapshots"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, true, tc.source)
			m := tc.source.(metav1.Object)
			kind := datasource.ClaimKind
			if tc.wantRes == "volumesnapshots" {
				kind = datasource.SnapshotKind
			}
			src := &datasource.Source{Ref: datasource.Ref{Kind: kind, Namespace: "prod", Name: m.GetName()}, Object: tc.source}
			errs := make(chan error, tc.claims)
			var wg sync.WaitGroup
			for range tc.claims {
				wg.Go(func() { errs <- f.c.Protect(context.Background(), nil, src) })
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				if err != nil {
					t.Errorf("Protect() error = %v", err)
				}
			}
			got := f.patches(t)
			if len(got) != 1 || got[0].resource != tc.wantRes || !slices.Equal(got[0].finalizers, []string{FinalizerOf(kind)}) {
				t.Errorf("patches = %+v, want one adding %s to the %s", got, FinalizerOf(kind), tc.wantRes)
			}
		})
	}
}
