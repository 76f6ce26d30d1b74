package referencegrant

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewayv1beta1 "sigs.k8s.io/gateway-api/apis/v1beta1"
)

const (
	snapshotGroup = "snapshot.storage.k8s.io"
	snapshotKind  = "VolumeSnapshot"
	claimKind     = "PersistentVolumeClaim"
)

// newGrant builds a v1 grant in namespace ns.
func newGrant(ns, name string, from []gatewayv1.ReferenceGrantFrom, to []gatewayv1.ReferenceGrantTo) *gatewayv1.ReferenceGrant {
	return &gatewayv1.ReferenceGrant{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, ResourceVersion: "1"},
		Spec:       gatewayv1.ReferenceGrantSpec{From: from, To: to},
	}
}

// newBetaGrant builds the same grant as newGrant, as v1beta1.
func newBetaGrant(ns, name string, from []gatewayv1.ReferenceGrantFrom, to []gatewayv1.ReferenceGrantTo) *gatewayv1beta1.ReferenceGrant {
	return &gatewayv1beta1.ReferenceGrant{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, ResourceVersion: "1"},
		Spec:       gatewayv1beta1.ReferenceGrantSpec{From: from, To: to},
	}
}

func from(group, kind, ns string) []gatewayv1.ReferenceGrantFrom {
	return []gatewayv1.ReferenceGrantFrom{{Group: gatewayv1.Group(group), Kind: gatewayv1.Kind(kind), Namespace: gatewayv1.Namespace(ns)}}
}

func claimsFrom(ns string) []gatewayv1.ReferenceGrantFrom {
	return from("", claimKind, ns)
}

// to builds one to entry; name nil means every object of the kind.
func to(group, kind string, name *string) []gatewayv1.ReferenceGrantTo {
	entry := gatewayv1.ReferenceGrantTo{Group: gatewayv1.Group(group), Kind: gatewayv1.Kind(kind)}
	if name != nil {
		n := gatewayv1.ObjectName(*name)
		entry.Name = &n
	}
	return []gatewayv1.ReferenceGrantTo{entry}
}

func snapshots(name string) []gatewayv1.ReferenceGrantTo {
	return to(snapshotGroup, snapshotKind, &name)
}

func allSnapshots() []gatewayv1.ReferenceGrantTo {
	return to(snapshotGroup, snapshotKind, nil)
}

// snapshotRef is a claim in fromNS using snapshot toNS/name.
func snapshotRef(fromNS, toNS, name string) Reference {
	return Reference{
		FromGroup: "", FromKind: claimKind, FromNamespace: fromNS,
		ToGroup: snapshotGroup, ToKind: snapshotKind, ToNamespace: toNS, ToName: name,
	}
}

func ptr(s string) *string { return &s }

func TestIndexCheck(t *testing.T) {
	nightly := snapshotRef("dev", "prod", "nightly")
	tests := []struct {
		name   string
		grants []any
		ref    Reference
		want   Decision
	}{
		{
			name: "no grants",
			ref:  nightly,
			want: Decision{},
		},
		{
			name: "same namespace needs no grant",
			ref:  snapshotRef("prod", "prod", "nightly"),
			want: Decision{Allowed: true},
		},
		{
			name:   "named grant allows",
			grants: []any{newGrant("prod", "g", claimsFrom("dev"), snapshots("nightly"))},
			ref:    nightly,
			want:   Decision{Allowed: true, Grant: "g"},
		},
		{
			name:   "grant without name allows every name",
			grants: []any{newGrant("prod", "g", claimsFrom("dev"), allSnapshots())},
			ref:    nightly,
			want:   Decision{Allowed: true, Grant: "g"},
		},
		{
			name:   "empty name allows every name",
			grants: []any{newGrant("prod", "g", claimsFrom("dev"), snapshots(""))},
			ref:    nightly,
			want:   Decision{Allowed: true, Grant: "g"},
		},
		{
			name:   "named grant does not allow another name",
			grants: []any{newGrant("prod", "g", claimsFrom("dev"), snapshots("weekly"))},
			ref:    nightly,
		},
		{
			name:   "from group mismatch",
			grants: []any{newGrant("prod", "g", from("core", claimKind, "dev"), snapshots("nightly"))},
			ref:    nightly,
		},
		{
			name:   "from kind mismatch",
			grants: []any{newGrant("prod", "g", from("", "Pod", "dev"), snapshots("nightly"))},
			ref:    nightly,
		},
		{
			name:   "from kind is case-sensitive",
			grants: []any{newGrant("prod", "g", from("", "persistentvolumeclaim", "dev"), snapshots("nightly"))},
			ref:    nightly,
		},
		{
			name:   "from namespace mismatch",
			grants: []any{newGrant("prod", "g", claimsFrom("test"), snapshots("nightly"))},
			ref:    nightly,
		},
		{
			name:   "to group mismatch",
			grants: []any{newGrant("prod", "g", claimsFrom("dev"), to("", snapshotKind, ptr("nightly")))},
			ref:    nightly,
		},
		{
			name:   "to group is case-sensitive",
			grants: []any{newGrant("prod", "g", claimsFrom("dev"), to("Snapshot.Storage.K8s.io", snapshotKind, ptr("nightly")))},
			ref:    nightly,
		},
		{
			name:   "to kind mismatch",
			grants: []any{newGrant("prod", "g", claimsFrom("dev"), to(snapshotGroup, "VolumeSnapshotContent", ptr("nightly")))},
			ref:    nightly,
		},
		{
			name:   "to kind is case-sensitive",
			grants: []any{newGrant("prod", "g", claimsFrom("dev"), to(snapshotGroup, "volumesnapshot", nil))},
			ref:    nightly,
		},
		{
			name:   "grant in the claim's namespace does not count",
			grants: []any{newGrant("dev", "g", claimsFrom("dev"), allSnapshots())},
			ref:    nightly,
		},
		{
			name:   "grant in a third namespace does not count",
			grants: []any{newGrant("other", "g", claimsFrom("dev"), allSnapshots())},
			ref:    nightly,
		},
		{
			name:   "PVC source in the core group",
			grants: []any{newGrant("prod", "g", claimsFrom("dev"), to("", claimKind, ptr("data")))},
			ref: Reference{FromKind: claimKind, FromNamespace: "dev",
				ToKind: claimKind, ToNamespace: "prod", ToName: "data"},
			want: Decision{Allowed: true, Grant: "g"},
		},
		{
			name: "grants OR together",
			grants: []any{
				newGrant("prod", "a-other", claimsFrom("test"), allSnapshots()),
				newGrant("prod", "b-this", claimsFrom("dev"), snapshots("nightly")),
			},
			ref:  nightly,
			want: Decision{Allowed: true, Grant: "b-this"},
		},
		{
			name: "smallest granting name is reported",
			grants: []any{
				newGrant("prod", "zeta", claimsFrom("dev"), allSnapshots()),
				newGrant("prod", "beta", claimsFrom("dev"), snapshots("nightly")),
				newGrant("prod", "gamma", claimsFrom("dev"), snapshots("nightly")),
			},
			ref:  nightly,
			want: Decision{Allowed: true, Grant: "beta"},
		},
		{
			name: "entries within one grant OR together",
			grants: []any{newGrant("prod", "g",
				append(claimsFrom("test"), claimsFrom("dev")...),
				append(to("", claimKind, nil), snapshots("nightly")...))},
			ref:  nightly,
			want: Decision{Allowed: true, Grant: "g"},
		},
		{
			name:   "v1beta1 grant allows",
			grants: []any{newBetaGrant("prod", "g", claimsFrom("dev"), snapshots("nightly"))},
			ref:    nightly,
			want:   Decision{Allowed: true, Grant: "g"},
		},
		{
			name:   "v1beta1 grant for another name",
			grants: []any{newBetaGrant("prod", "g", claimsFrom("dev"), snapshots("weekly"))},
			ref:    nightly,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			x := NewIndex()
			for _, g := range tc.grants {
				if err := x.Upsert(g); err != nil {
					t.Fatalf("Upsert: %v", err)
				}
			}
			got, err := x.Check(tc.ref)
			if err != nil {
				t.Fatalf("Check: %v", err)
			}
			if got != tc.want {
				t.Errorf("Check(%+v) = %+v, want %+v", tc.ref, got, tc.want)
			}
		})
	}
}

// recorder collects listener calls.
type recorder struct {
	mu    sync.Mutex
	calls []Change
}

func (r *recorder) listen(c Change) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, c)
}

func (r *recorder) take() []Change {
	r.mu.Lock()
	defer r.mu.Unlock()
	calls := r.calls
	r.calls = nil
	return calls
}

// saw reports whether some call so far was c.
func (r *recorder) saw(c Change) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.ContainsFunc(r.calls, func(got Change) bool { return equalChanges(got, c) })
}

func equalChanges(a, b Change) bool {
	return a.All == b.All && a.Namespace == b.Namespace && slices.Equal(a.From, b.From) && slices.Equal(a.To, b.To)
}

// claimsChange is the Change of a grant in ns about claims from the from
// namespaces.
func claimsChange(ns string, from []string, to ...Target) Change {
	c := Change{Namespace: ns, To: to}
	for _, f := range from {
		c.From = append(c.From, Origin{Kind: claimKind, Namespace: f})
	}
	return c
}

// snapshotTarget is a to entry for snapshot name ("" for every snapshot).
func snapshotTarget(name string) Target {
	return Target{Group: snapshotGroup, Kind: snapshotKind, Name: name}
}

func TestIndexChanges(t *testing.T) {
	nightly := snapshotRef("dev", "prod", "nightly")
	allowing := newGrant("prod", "g", claimsFrom("dev"), snapshots("nightly"))
	relabelled := allowing.DeepCopy()
	relabelled.ResourceVersion = "2"
	relabelled.Labels = map[string]string{"team": "storage"}
	reordered := newGrant("prod", "g",
		append(claimsFrom("test"), claimsFrom("dev")...),
		snapshots("nightly"))
	reordered.ResourceVersion = "3"
	reorderedAgain := reordered.DeepCopy()
	reorderedAgain.Spec.From = append(claimsFrom("dev"), claimsFrom("test")...)
	reorderedAgain.ResourceVersion = "4"
	narrowed := newGrant("prod", "g", claimsFrom("dev"), snapshots("weekly"))
	narrowed.ResourceVersion = "5"
	movedToQA := newGrant("prod", "g", claimsFrom("qa"), snapshots("nightly"))
	movedToQA.ResourceVersion = "6"

	// What listeners are told: the grant's namespace, and only the from
	// and to entries whose permissions were added or withdrawn.
	devNightly := claimsChange("prod", []string{"dev"}, snapshotTarget("nightly"))
	devAll := claimsChange("prod", []string{"dev"}, snapshotTarget(""))

	type step struct {
		name      string
		upsert    any
		delete    any
		want      Decision
		wantCalls []Change
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{
			name: "update that removes a permission",
			steps: []step{
				{name: "add", upsert: allowing, want: Decision{Allowed: true, Grant: "g"}, wantCalls: []Change{devNightly}},
				{name: "narrow", upsert: narrowed, want: Decision{},
					wantCalls: []Change{claimsChange("prod", []string{"dev"}, snapshotTarget("nightly"), snapshotTarget("weekly"))}},
			},
		},
		{
			name: "update that moves the grant from dev to qa",
			steps: []step{
				{name: "add", upsert: allowing, want: Decision{Allowed: true, Grant: "g"}, wantCalls: []Change{devNightly}},
				{name: "move", upsert: movedToQA, want: Decision{},
					wantCalls: []Change{claimsChange("prod", []string{"dev", "qa"}, snapshotTarget("nightly"))}},
			},
		},
		{
			name: "changes that allow the same things wake nobody",
			steps: []step{
				{name: "add", upsert: allowing, want: Decision{Allowed: true, Grant: "g"}, wantCalls: []Change{devNightly}},
				{name: "same object again", upsert: allowing, want: Decision{Allowed: true, Grant: "g"}},
				{name: "label change", upsert: relabelled, want: Decision{Allowed: true, Grant: "g"}},
				// Only the added namespace: dev's decisions stay.
				{name: "more namespaces", upsert: reordered, want: Decision{Allowed: true, Grant: "g"},
					wantCalls: []Change{claimsChange("prod", []string{"test"}, snapshotTarget("nightly"))}},
				{name: "same entries reordered", upsert: reorderedAgain, want: Decision{Allowed: true, Grant: "g"}},
			},
		},
		{
			name: "grants that allow nothing wake nobody",
			steps: []step{
				{name: "add without to", upsert: newGrant("prod", "g", claimsFrom("dev"), nil), want: Decision{}},
				{name: "delete", delete: newGrant("prod", "g", nil, nil), want: Decision{}},
			},
		},
		{
			name: "several entries, other kinds kept for their listeners",
			steps: []step{
				{name: "add", upsert: newGrant("prod", "g",
					append(append(claimsFrom("qa"), from("gateway.networking.k8s.io", "HTTPRoute", "web")...), claimsFrom("dev")...),
					append(append(snapshots("nightly"), to("", claimKind, nil)...), snapshots("nightly")...)),
					want: Decision{Allowed: true, Grant: "g"},
					wantCalls: []Change{{Namespace: "prod",
						From: []Origin{{Kind: claimKind, Namespace: "dev"}, {Kind: claimKind, Namespace: "qa"}, {Group: "gateway.networking.k8s.io", Kind: "HTTPRoute", Namespace: "web"}},
						To:   []Target{{Kind: claimKind}, snapshotTarget("nightly")},
					}}},
			},
		},
		{
			name: "delete",
			steps: []step{
				{name: "add", upsert: allowing, want: Decision{Allowed: true, Grant: "g"}, wantCalls: []Change{devNightly}},
				{name: "delete", delete: allowing, want: Decision{}, wantCalls: []Change{devNightly}},
				{name: "delete again", delete: allowing, want: Decision{}},
			},
		},
		{
			name: "delete by tombstone",
			steps: []step{
				{name: "add", upsert: allowing, want: Decision{Allowed: true, Grant: "g"}, wantCalls: []Change{devNightly}},
				// The tombstone carries no spec: the change is what the
				// index held.
				{name: "tombstone", delete: cache.DeletedFinalStateUnknown{Key: "prod/g"}, want: Decision{}, wantCalls: []Change{devNightly}},
			},
		},
		{
			name: "v1beta1 update and delete",
			steps: []step{
				{name: "add", upsert: newBetaGrant("prod", "g", claimsFrom("dev"), allSnapshots()), want: Decision{Allowed: true, Grant: "g"}, wantCalls: []Change{devAll}},
				{name: "narrow", upsert: newBetaGrant("prod", "g", claimsFrom("dev"), snapshots("weekly")), want: Decision{},
					wantCalls: []Change{claimsChange("prod", []string{"dev"}, snapshotTarget(""), snapshotTarget("weekly"))}},
				{name: "widen", upsert: newBetaGrant("prod", "g", claimsFrom("dev"), snapshots("nightly")), want: Decision{Allowed: true, Grant: "g"},
					wantCalls: []Change{claimsChange("prod", []string{"dev"}, snapshotTarget("nightly"), snapshotTarget("weekly"))}},
				{name: "delete", delete: newBetaGrant("prod", "g", nil, nil), want: Decision{}, wantCalls: []Change{devNightly}},
			},
		},
		{
			name: "the next smallest grant takes over",
			steps: []step{
				{name: "add b", upsert: newGrant("prod", "b", claimsFrom("dev"), allSnapshots()), want: Decision{Allowed: true, Grant: "b"}, wantCalls: []Change{devAll}},
				{name: "add a", upsert: newGrant("prod", "a", claimsFrom("dev"), allSnapshots()), want: Decision{Allowed: true, Grant: "a"}, wantCalls: []Change{devAll}},
				{name: "add c", upsert: newGrant("prod", "c", claimsFrom("dev"), snapshots("nightly")), want: Decision{Allowed: true, Grant: "a"}, wantCalls: []Change{devNightly}},
				{name: "delete a", delete: newGrant("prod", "a", nil, nil), want: Decision{Allowed: true, Grant: "b"}, wantCalls: []Change{devAll}},
				{name: "delete b", delete: newGrant("prod", "b", nil, nil), want: Decision{Allowed: true, Grant: "c"}, wantCalls: []Change{devAll}},
				{name: "delete c", delete: newGrant("prod", "c", nil, nil), want: Decision{}, wantCalls: []Change{devNightly}},
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			x := NewIndex()
			var calls recorder
			x.AddListener(calls.listen)
			for _, s := range tc.steps {
				var err error
				if s.upsert != nil {
					err = x.Upsert(s.upsert)
				} else {
					err = x.Delete(s.delete)
				}
				if err != nil {
					t.Fatalf("%s: %v", s.name, err)
				}
				got, err := x.Check(nightly)
				if err != nil {
					t.Fatalf("%s: Check: %v", s.name, err)
				}
				if got != s.want {
					t.Errorf("%s: Check = %+v, want %+v", s.name, got, s.want)
				}
				if gotCalls := calls.take(); !slices.EqualFunc(gotCalls, s.wantCalls, equalChanges) {
					t.Errorf("%s: listener calls = %v, want %v", s.name, gotCalls, s.wantCalls)
				}
			}
			if tc.name == "delete" || tc.name == "delete by tombstone" {
				if n := x.Len(); n != 0 {
					t.Errorf("Len after delete = %d, want 0", n)
				}
				if n := len(x.rules); n != 0 {
					t.Errorf("rules left after delete: %d", n)
				}
			}
		})
	}
}

func TestIndexRejectsOtherTypes(t *testing.T) {
	x := NewIndex()
	if err := x.Upsert(&metav1.PartialObjectMetadata{}); err == nil {
		t.Error("Upsert of a non-grant succeeded")
	}
	if err := x.Delete("prod/g"); err == nil {
		t.Error("Delete of a non-grant succeeded")
	}
	if err := x.Delete(cache.DeletedFinalStateUnknown{Key: "a/b/c"}); err == nil {
		t.Error("Delete of a tombstone with a bad key succeeded")
	}
}

func TestIndexUnavailable(t *testing.T) {
	x := NewIndex()
	if err := x.Upsert(newGrant("prod", "g", claimsFrom("dev"), allSnapshots())); err != nil {
		t.Fatal(err)
	}
	x.setUnavailable(fmt.Errorf("%w: testing", ErrUnavailable))
	if _, err := x.Check(snapshotRef("dev", "prod", "nightly")); !errors.Is(err, ErrUnavailable) {
		t.Errorf("Check while unavailable: err = %v, want ErrUnavailable", err)
	}
	if got, err := x.Check(snapshotRef("prod", "prod", "nightly")); err != nil || !got.Allowed {
		t.Errorf("same-namespace Check while unavailable = %+v, %v; want allowed", got, err)
	}
	x.setAvailable()
	if got, err := x.Check(snapshotRef("dev", "prod", "nightly")); err != nil || got.Grant != "g" {
		t.Errorf("Check after setAvailable = %+v, %v; want allowed by g", got, err)
	}
}

func TestIndexCheckDoesNotAllocate(t *testing.T) {
	x := NewIndex()
	if err := x.Upsert(newGrant("prod", "g", claimsFrom("dev"), snapshots("nightly"))); err != nil {
		t.Fatal(err)
	}
	refs := []Reference{snapshotRef("dev", "prod", "nightly"), snapshotRef("dev", "prod", "other"), snapshotRef("qa", "prod", "nightly")}
	for _, ref := range refs {
		if n := testing.AllocsPerRun(100, func() { _, _ = x.Check(ref) }); n != 0 {
			t.Errorf("Check(%+v) allocates %v times", ref, n)
		}
	}
}
