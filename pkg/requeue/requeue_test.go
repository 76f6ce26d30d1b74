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

	"github.com/crossns/external-provisioner/pkg/datasource"
)

// claim is a claim ns/name whose dataSourceRef names kind sourceNS/source
// (no dataSourceRef when kind is empty); mods change its state.
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

func bound(c *v1.PersistentVolumeClaim) {
	c.Spec.VolumeName = "pv-" + c.Name
	c.Status.Phase = v1.ClaimBound
}

// provisioned: the volume exists but the binder has not bound the claim yet.
func provisioned(c *v1.PersistentVolumeClaim) { c.Spec.VolumeName = "pv-" + c.Name }

func deleting(c *v1.PersistentVolumeClaim) { c.DeletionTimestamp = &metav1.Time{} }

func TestIndexBySourceNamespace(t *testing.T) {
	tests := []struct {
		name string
		obj  any
		want []string
	}{
		{name: "not a claim", obj: &v1.PersistentVolume{}},
		{name: "no data source", obj: claim("dev", "empty", "", "")},
		{name: "snapshot in the claim's namespace", obj: claim("dev", "a", datasource.SnapshotKind, "")},
		{name: "namespace set to the claim's own", obj: claim("dev", "a", datasource.SnapshotKind, "dev")},
		{name: "populator in another namespace", obj: claim("dev", "a", "Hello", "prod")},
		{name: "snapshot in another namespace", obj: claim("dev", "a", datasource.SnapshotKind, "prod"), want: []string{"prod"}},
		{name: "claim in another namespace", obj: claim("dev", "a", datasource.ClaimKind, "prod"), want: []string{"prod"}},
		{name: "bound claims are indexed too", obj: claim("dev", "a", datasource.ClaimKind, "prod", bound), want: []string{"prod"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := IndexBySourceNamespace(tc.obj)
			if err != nil || !slices.Equal(got, tc.want) {
				t.Errorf("IndexBySourceNamespace() = %q, %v; want %q", got, err, tc.want)
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

func (r *recorder) got() ([]string, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	u := slices.Clone(r.updates)
	slices.Sort(u)
	return u, r.other
}

func TestGrantsChanged(t *testing.T) {
	snap, pvc := datasource.SnapshotKind, datasource.ClaimKind
	claims := []*v1.PersistentVolumeClaim{
		// Waiting for a source in prod: requeued on a change in prod.
		claim("dev", "restore", snap, "prod"),
		claim("qa", "clone", pvc, "prod"),
		// Not waiting any more, or not for prod.
		claim("dev", "done", snap, "prod", bound),
		claim("dev", "provisioned", snap, "prod", provisioned),
		claim("dev", "leaving", snap, "prod", deleting),
		claim("dev", "lost", snap, "prod", func(c *v1.PersistentVolumeClaim) { c.Status.Phase = v1.ClaimLost }),
		claim("prod", "local", snap, ""),
		claim("dev", "local", pvc, ""),
		claim("dev", "populated", "Hello", "prod"),
		claim("dev", "plain", "", ""),
		// Waiting for a source in staging.
		claim("dev", "from-staging", snap, "staging"),
		claim("staging", "from-staging", pvc, "staging"),
	}
	tests := []struct {
		name      string
		namespace string
		// cachedBeforeWrap fills the cache before Wrap adds its index, as
		// when the wrapper is made after the informer started.
		cachedBeforeWrap bool
		want             []string
	}{
		{name: "grant changed in prod", namespace: "prod", want: []string{"dev/restore", "qa/clone"}},
		{name: "grant changed in staging", namespace: "staging", want: []string{"dev/from-staging"}},
		{name: "grant changed in dev, which nobody restores from", namespace: "dev"},
		{name: "grant changed in a namespace without claims", namespace: "empty"},
		{name: "grants became readable", namespace: "", want: []string{"dev/from-staging", "dev/restore", "qa/clone"}},
		{name: "claims cached before Wrap, grant changed in prod", namespace: "prod", cachedBeforeWrap: true, want: []string{"dev/restore", "qa/clone"}},
		{name: "claims cached before Wrap, grants became readable", namespace: "", cachedBeforeWrap: true, want: []string{"dev/from-staging", "dev/restore", "qa/clone"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			shared := informers.NewSharedInformerFactory(fake.NewClientset(), 0).Core().V1().PersistentVolumeClaims().Informer()
			load := func() {
				for _, c := range claims {
					if err := shared.GetIndexer().Add(c); err != nil {
						t.Fatal(err)
					}
				}
			}
			if tc.cachedBeforeWrap {
				load()
			}
			inf, err := Wrap(shared)
			if err != nil {
				t.Fatalf("Wrap() error = %v", err)
			}
			// The provision loop registers its handler through the wrapper;
			// a handler registered on the shared informer directly is not
			// the loop's and is not told.
			loop, other, resync := &recorder{}, &recorder{}, &recorder{}
			if _, err := inf.AddEventHandler(loop); err != nil {
				t.Fatal(err)
			}
			if _, err := inf.AddEventHandlerWithResyncPeriod(resync, time.Hour); err != nil {
				t.Fatal(err)
			}
			if _, err := shared.AddEventHandler(other); err != nil {
				t.Fatal(err)
			}
			if !tc.cachedBeforeWrap {
				load()
			}

			n := inf.GrantsChanged(tc.namespace)

			if n != len(tc.want) {
				t.Errorf("GrantsChanged(%q) = %d, want %d", tc.namespace, n, len(tc.want))
			}
			for name, r := range map[string]*recorder{"AddEventHandler": loop, "AddEventHandlerWithResyncPeriod": resync} {
				got, extra := r.got()
				if !slices.Equal(got, tc.want) {
					t.Errorf("handler registered with %s got OnUpdate for %q, want %q", name, got, tc.want)
				}
				if extra != 0 {
					t.Errorf("handler registered with %s got %d other calls, want none", name, extra)
				}
			}
			if got, extra := other.got(); len(got) > 0 || extra > 0 {
				t.Errorf("handler registered on the shared informer got %q (+%d), want nothing", got, extra)
			}
		})
	}
}
