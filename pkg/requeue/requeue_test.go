package requeue

import (
	"slices"
	"sync"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/utils/ptr"

	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/crossns/external-provisioner/pkg/datasource"
	"github.com/crossns/external-provisioner/pkg/referencegrant"
)

// claim is a claim ns/name whose dataSourceRef names kind sourceNS/src (no
// dataSourceRef when kind is empty); mods change its state.
func claim(ns, name, kind, sourceNS string, mods ...func(*v1.PersistentVolumeClaim)) *v1.PersistentVolumeClaim {
	c := &v1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Status:     v1.PersistentVolumeClaimStatus{Phase: v1.ClaimPending},
	}
	if kind != "" {
		ref := &v1.TypedObjectReference{Kind: kind, Name: "src"}
		if kind == datasource.SnapshotKind {
			ref.APIGroup = ptr.To(datasource.SnapshotGroup)
		}
		if sourceNS != "" {
			ref.Namespace = ptr.To(sourceNS)
		}
		c.Spec.DataSourceRef = ref
	}
	for _, m := range mods {
		m(c)
	}
	return c
}

// source names the claim's data source.
func source(name string) func(*v1.PersistentVolumeClaim) {
	return func(c *v1.PersistentVolumeClaim) { c.Spec.DataSourceRef.Name = name }
}

// legacy moves the claim's data source to the dataSource field, which has no
// namespace.
func legacy(c *v1.PersistentVolumeClaim) {
	r := c.Spec.DataSourceRef
	c.Spec.DataSourceRef = nil
	c.Spec.DataSource = &v1.TypedLocalObjectReference{APIGroup: r.APIGroup, Kind: r.Kind, Name: r.Name}
}

func bound(c *v1.PersistentVolumeClaim) {
	c.Spec.VolumeName = "pv-" + c.Name
	c.Status.Phase = v1.ClaimBound
}

// provisioned: the volume exists but the binder has not bound the claim yet.
func provisioned(c *v1.PersistentVolumeClaim) { c.Spec.VolumeName = "pv-" + c.Name }

func deleting(c *v1.PersistentVolumeClaim) { c.DeletionTimestamp = &metav1.Time{} }

func lost(c *v1.PersistentVolumeClaim) { c.Status.Phase = v1.ClaimLost }

func TestIndexes(t *testing.T) {
	snap, pvc := datasource.SnapshotKind, datasource.ClaimKind
	tests := []struct {
		name     string
		obj      any
		wantKind string
		wantName string
	}{
		{name: "not a claim", obj: &v1.PersistentVolume{}},
		{name: "no data source", obj: claim("dev", "empty", "", "")},
		{name: "snapshot in the claim's namespace", obj: claim("dev", "a", snap, "")},
		{name: "namespace set to the claim's own", obj: claim("dev", "a", snap, "dev")},
		{name: "legacy dataSource is always local", obj: claim("dev", "a", snap, "", legacy)},
		{name: "populator in another namespace", obj: claim("dev", "a", "Hello", "prod")},
		{name: "snapshot in another namespace", obj: claim("dev", "a", snap, "prod", source("nightly")),
			wantKind: "prod/dev/snapshot.storage.k8s.io/VolumeSnapshot", wantName: "prod/dev/snapshot.storage.k8s.io/VolumeSnapshot/nightly"},
		{name: "claim in another namespace", obj: claim("dev", "a", pvc, "prod", source("db")),
			wantKind: "prod/dev//PersistentVolumeClaim", wantName: "prod/dev//PersistentVolumeClaim/db"},
		// No grant change concerns these any more.
		{name: "bound", obj: claim("dev", "a", pvc, "prod", bound)},
		{name: "provisioned, not yet bound", obj: claim("dev", "a", pvc, "prod", provisioned)},
		{name: "being deleted", obj: claim("dev", "a", pvc, "prod", deleting)},
		{name: "lost", obj: claim("dev", "a", pvc, "prod", lost)},
	}
	one := func(key string) []string {
		if key == "" {
			return nil
		}
		return []string{key}
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got, err := IndexBySourceKind(tc.obj); err != nil || !slices.Equal(got, one(tc.wantKind)) {
				t.Errorf("IndexBySourceKind() = %q, %v; want %q", got, err, one(tc.wantKind))
			}
			if got, err := IndexBySourceName(tc.obj); err != nil || !slices.Equal(got, one(tc.wantName)) {
				t.Errorf("IndexBySourceName() = %q, %v; want %q", got, err, one(tc.wantName))
			}
		})
	}
}

// recorder is the provision loop's claim handler, as far as requeueing
// goes: it records the claims it was told about.
type recorder struct {
	mu      sync.Mutex
	updates []string
	other   int
}

func (r *recorder) OnAdd(any, bool) { r.mu.Lock(); r.other++; r.mu.Unlock() }
func (r *recorder) OnDelete(any)    { r.mu.Lock(); r.other++; r.mu.Unlock() }
func (r *recorder) OnUpdate(old, cur any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := cur.(*v1.PersistentVolumeClaim)
	if old != cur {
		r.other++ // a requeue passes the same object twice
	}
	r.updates = append(r.updates, c.Namespace+"/"+c.Name)
}

// take returns the claims told about so far, sorted, and the number of other
// calls, and forgets them.
func (r *recorder) take() ([]string, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	u, n := r.updates, r.other
	r.updates, r.other = nil, 0
	slices.Sort(u)
	return u, n
}

// change is the Change of a grant in ns about claims from the from
// namespaces.
func change(ns string, from []string, to ...referencegrant.Target) referencegrant.Change {
	c := referencegrant.Change{Namespace: ns, To: to}
	for _, f := range from {
		c.From = append(c.From, referencegrant.Origin{Kind: datasource.ClaimKind, Namespace: f})
	}
	return c
}

func snapshotTarget(name string) referencegrant.Target {
	return referencegrant.Target{Group: datasource.SnapshotGroup, Kind: datasource.SnapshotKind, Name: name}
}

func claimTarget(name string) referencegrant.Target {
	return referencegrant.Target{Kind: datasource.ClaimKind, Name: name}
}

// waitingClaims is a mix of claims waiting for sources in prod and staging
// and claims that no grant change concerns.
func waitingClaims() []*v1.PersistentVolumeClaim {
	snap, pvc := datasource.SnapshotKind, datasource.ClaimKind
	return []*v1.PersistentVolumeClaim{
		claim("dev", "restore-a", snap, "prod", source("a")),
		claim("dev", "restore-b", snap, "prod", source("b")),
		claim("qa", "restore-a", snap, "prod", source("a")),
		claim("dev", "clone-a", pvc, "prod", source("a")),
		claim("dev", "restore-staging-a", snap, "staging", source("a")),
		// Not waiting any more, or not for another namespace.
		claim("dev", "done", snap, "prod", source("a"), bound),
		claim("dev", "provisioned", snap, "prod", source("a"), provisioned),
		claim("dev", "leaving", snap, "prod", source("a"), deleting),
		claim("dev", "lost", snap, "prod", source("a"), lost),
		claim("prod", "local", snap, "", source("a")),
		claim("dev", "local", pvc, "", source("a")),
		claim("dev", "populated", "Hello", "prod", source("a")),
		claim("dev", "plain", "", ""),
	}
}

// newInformer returns a wrapped claim informer holding claims, with the
// loop's handler registered through the wrapper (twice, once with a resync
// period, as the loop may) and another handler registered on the shared
// informer directly, which is not the loop's and must not be told. With
// cachedBeforeWrap the cache is filled before Wrap adds its indexes, as when
// the wrapper is made after the informer started.
func newInformer(t testing.TB, claims []*v1.PersistentVolumeClaim, cachedBeforeWrap bool) (inf *Informer, loop, resync, other *recorder) {
	shared := informers.NewSharedInformerFactory(fake.NewClientset(), 0).Core().V1().PersistentVolumeClaims().Informer()
	load := func() {
		for _, c := range claims {
			if err := shared.GetIndexer().Add(c); err != nil {
				t.Fatal(err)
			}
		}
	}
	if cachedBeforeWrap {
		load()
	}
	inf, err := Wrap(shared)
	if err != nil {
		t.Fatalf("Wrap() error = %v", err)
	}
	loop, resync, other = &recorder{}, &recorder{}, &recorder{}
	if _, err := inf.AddEventHandler(loop); err != nil {
		t.Fatal(err)
	}
	if _, err := inf.AddEventHandlerWithResyncPeriod(resync, time.Hour); err != nil {
		t.Fatal(err)
	}
	if _, err := shared.AddEventHandler(other); err != nil {
		t.Fatal(err)
	}
	if !cachedBeforeWrap {
		load()
	}
	return inf, loop, resync, other
}

// checkRequeued fails t unless the loop's handlers were told exactly about
// want (each once, as unchanged updates) and nobody else was told anything.
func checkRequeued(t *testing.T, loop, resync, other *recorder, want []string) {
	t.Helper()
	for name, r := range map[string]*recorder{"AddEventHandler": loop, "AddEventHandlerWithResyncPeriod": resync} {
		got, extra := r.take()
		if !slices.Equal(got, want) {
			t.Errorf("handler registered with %s got OnUpdate for %q, want %q", name, got, want)
		}
		if extra != 0 {
			t.Errorf("handler registered with %s got %d other calls, want none", name, extra)
		}
	}
	if got, extra := other.take(); len(got) > 0 || extra > 0 {
		t.Errorf("handler registered on the shared informer got %q (+%d), want nothing", got, extra)
	}
}

func TestGrantsChanged(t *testing.T) {
	everyWaiting := []string{"dev/clone-a", "dev/restore-a", "dev/restore-b", "dev/restore-staging-a", "qa/restore-a"}
	tests := []struct {
		name   string
		change referencegrant.Change
		// cachedBeforeWrap fills the cache before Wrap adds its indexes.
		cachedBeforeWrap bool
		want             []string
	}{
		{name: "from dev to snapshot a", change: change("prod", []string{"dev"}, snapshotTarget("a")), want: []string{"dev/restore-a"}},
		{name: "from dev to every snapshot", change: change("prod", []string{"dev"}, snapshotTarget("")), want: []string{"dev/restore-a", "dev/restore-b"}},
		{name: "from dev and qa to snapshot a", change: change("prod", []string{"dev", "qa"}, snapshotTarget("a")), want: []string{"dev/restore-a", "qa/restore-a"}},
		{name: "every snapshot and snapshot a: each claim once", change: change("prod", []string{"dev"}, snapshotTarget(""), snapshotTarget("a")), want: []string{"dev/restore-a", "dev/restore-b"}},
		{name: "to claim a", change: change("prod", []string{"dev"}, claimTarget("a")), want: []string{"dev/clone-a"}},
		{name: "to claims and snapshot b", change: change("prod", []string{"dev"}, claimTarget(""), snapshotTarget("b")), want: []string{"dev/clone-a", "dev/restore-b"}},
		{name: "to snapshot c, which nobody waits for", change: change("prod", []string{"dev", "qa"}, snapshotTarget("c"))},
		{name: "to another kind named a", change: change("prod", []string{"dev"}, referencegrant.Target{Group: datasource.SnapshotGroup, Kind: "VolumeSnapshotContent", Name: "a"})},
		{name: "from a namespace without claims", change: change("prod", []string{"test"}, snapshotTarget(""))},
		{name: "from another kind in dev", change: referencegrant.Change{Namespace: "prod",
			From: []referencegrant.Origin{{Group: "gateway.networking.k8s.io", Kind: "HTTPRoute", Namespace: "dev"}, {Group: "core", Kind: datasource.ClaimKind, Namespace: "dev"}},
			To:   []referencegrant.Target{snapshotTarget("")}}},
		{name: "grant in staging", change: change("staging", []string{"dev"}, snapshotTarget("a")), want: []string{"dev/restore-staging-a"}},
		{name: "grant in dev, which nobody restores from", change: change("dev", []string{"prod"}, snapshotTarget(""))},
		{name: "grants became readable or unreadable", change: referencegrant.AllChanged, want: everyWaiting},
		{name: "claims cached before Wrap, from dev to snapshot a", change: change("prod", []string{"dev"}, snapshotTarget("a")), cachedBeforeWrap: true, want: []string{"dev/restore-a"}},
		{name: "claims cached before Wrap, all", change: referencegrant.AllChanged, cachedBeforeWrap: true, want: everyWaiting},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			inf, loop, resync, other := newInformer(t, waitingClaims(), tc.cachedBeforeWrap)

			n := inf.GrantsChanged(tc.change)

			if n != len(tc.want) {
				t.Errorf("GrantsChanged(%v) = %d, want %d", tc.change, n, len(tc.want))
			}
			checkRequeued(t, loop, resync, other, tc.want)
		})
	}
}

// TestGrantEditsRequeue follows grants through the real index to the loop:
// what an add, an update and a delete wake, step by step.
func TestGrantEditsRequeue(t *testing.T) {
	grant := func(rv string, from string, to ...gatewayv1.ReferenceGrantTo) *gatewayv1.ReferenceGrant {
		return &gatewayv1.ReferenceGrant{
			ObjectMeta: metav1.ObjectMeta{Namespace: "prod", Name: "g", ResourceVersion: rv},
			Spec: gatewayv1.ReferenceGrantSpec{
				From: []gatewayv1.ReferenceGrantFrom{{Kind: datasource.ClaimKind, Namespace: gatewayv1.Namespace(from)}},
				To:   to,
			},
		}
	}
	snapshot := func(name string) gatewayv1.ReferenceGrantTo {
		return gatewayv1.ReferenceGrantTo{Group: datasource.SnapshotGroup, Kind: datasource.SnapshotKind, Name: ptr.To(gatewayv1.ObjectName(name))}
	}
	everySnapshot := gatewayv1.ReferenceGrantTo{Group: datasource.SnapshotGroup, Kind: datasource.SnapshotKind}
	devA := grant("1", "dev", snapshot("a"))

	type step struct {
		name   string
		upsert *gatewayv1.ReferenceGrant
		delete *gatewayv1.ReferenceGrant
		all    bool
		want   []string
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{
			name: "add, move to qa, delete",
			steps: []step{
				// Not dev's claim of prod/b, not qa's of prod/a, not dev's
				// clone of the PVC prod/a.
				{name: "add from dev to snapshot a", upsert: devA, want: []string{"dev/restore-a"}},
				{name: "relabel", upsert: grant("2", "dev", snapshot("a"))},
				// dev loses its grant and qa gains one: both are retried.
				{name: "move from dev to qa", upsert: grant("3", "qa", snapshot("a")), want: []string{"dev/restore-a", "qa/restore-a"}},
				{name: "delete", delete: grant("3", "qa", snapshot("a")), want: []string{"qa/restore-a"}},
			},
		},
		{
			name: "widen and narrow",
			steps: []step{
				{name: "add from dev to snapshot a", upsert: devA, want: []string{"dev/restore-a"}},
				// Only the added permission: prod/b for dev.
				{name: "add snapshot b", upsert: grant("2", "dev", snapshot("a"), snapshot("b")), want: []string{"dev/restore-b"}},
				{name: "every snapshot", upsert: grant("3", "dev", everySnapshot), want: []string{"dev/restore-a", "dev/restore-b"}},
				{name: "delete", delete: grant("3", "dev", everySnapshot), want: []string{"dev/restore-a", "dev/restore-b"}},
			},
		},
		{
			name: "grants become readable or unreadable",
			steps: []step{
				{name: "readable", all: true, want: []string{"dev/clone-a", "dev/restore-a", "dev/restore-b", "dev/restore-staging-a", "qa/restore-a"}},
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			inf, loop, resync, other := newInformer(t, waitingClaims(), false)
			grants := referencegrant.NewIndex()
			grants.AddListener(func(c referencegrant.Change) { inf.GrantsChanged(c) })
			fake := referencegrant.NewFake()
			fake.AddListener(func(c referencegrant.Change) { inf.GrantsChanged(c) })
			for _, s := range tc.steps {
				var err error
				switch {
				case s.upsert != nil:
					err = grants.Upsert(s.upsert)
				case s.delete != nil:
					err = grants.Delete(s.delete)
				case s.all:
					// The Watcher's own tests show it sends AllChanged
					// when grants become readable or unreadable.
					fake.Notify(referencegrant.AllChanged)
				}
				if err != nil {
					t.Fatalf("%s: %v", s.name, err)
				}
				t.Run(s.name, func(t *testing.T) { checkRequeued(t, loop, resync, other, s.want) })
			}
		})
	}
}

// TestRequeue: claims another decider picks are handed to the loop's
// handlers, and only to them, once each.
func TestRequeue(t *testing.T) {
	claims := waitingClaims()
	inf, loop, resync, other := newInformer(t, claims, false)

	inf.Requeue(claims[0], claims[3])

	checkRequeued(t, loop, resync, other, []string{"dev/clone-a", "dev/restore-a"})
}
