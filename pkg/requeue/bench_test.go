package requeue

import (
	"fmt"
	"testing"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/ptr"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/crossns/external-provisioner/pkg/datasource"
	"github.com/crossns/external-provisioner/pkg/referencegrant"
)

const (
	benchNamespaces      = 50
	benchClaimsPerNS     = 20
	benchSourceNamespace = "prod"
)

// queueHandler is the provision loop's claim handler as far as requeueing
// goes: it puts the claim's UID on a work queue, as the loop does.
type queueHandler struct {
	q workqueue.TypedInterface[types.UID]
}

func (h queueHandler) OnAdd(any, bool) {}
func (h queueHandler) OnDelete(any)    {}
func (h queueHandler) OnUpdate(_, cur any) {
	h.q.Add(cur.(*v1.PersistentVolumeClaim).UID)
}

// BenchmarkGrantChanged measures what one grant change costs the requeue:
// 50 namespaces × 20 claims wait for snapshots in prod (claim i of each
// namespace restores snapshot snap-i), and one grant in prod for claims from
// ns-7 is added. The Change is the one the real Index sends. claims/op is how
// many claims go back to the loop, each of which costs a provisioning attempt
// (a grant check, usually an Event) on top of the ns/op shown here; the
// queue is drained every iteration so every requeue is a real Add.
func BenchmarkGrantChanged(b *testing.B) {
	from := gatewayv1.ReferenceGrantFrom{Kind: datasource.ClaimKind, Namespace: "ns-7"}
	snapshot := gatewayv1.ReferenceGrantTo{Group: datasource.SnapshotGroup, Kind: datasource.SnapshotKind, Name: ptr.To(gatewayv1.ObjectName("snap-3"))}
	everySnapshot := gatewayv1.ReferenceGrantTo{Group: datasource.SnapshotGroup, Kind: datasource.SnapshotKind}
	tests := []struct {
		name  string
		grant *gatewayv1.ReferenceGrant
		want  int
	}{
		{name: "grant=one-snapshot", grant: benchGrant(from, snapshot), want: 1},
		{name: "grant=every-snapshot", grant: benchGrant(from, everySnapshot), want: benchClaimsPerNS},
		// Grants became readable: everything waiting goes back.
		{name: "grant=all", want: benchNamespaces * benchClaimsPerNS},
	}
	for _, tc := range tests {
		b.Run(tc.name, func(b *testing.B) {
			inf, q := benchInformer(b)
			c := referencegrant.AllChanged
			if tc.grant != nil {
				grants := referencegrant.NewIndex()
				grants.AddListener(func(got referencegrant.Change) { c = got })
				if err := grants.Upsert(tc.grant); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportAllocs()
			n := 0
			for b.Loop() {
				n = inf.GrantsChanged(c)
				for q.Len() > 0 {
					uid, _ := q.Get()
					q.Done(uid)
				}
			}
			if n != tc.want {
				b.Fatalf("requeued %d claims, want %d", n, tc.want)
			}
			b.ReportMetric(float64(n), "claims/op")
		})
	}
}

func benchGrant(from gatewayv1.ReferenceGrantFrom, to gatewayv1.ReferenceGrantTo) *gatewayv1.ReferenceGrant {
	g := &gatewayv1.ReferenceGrant{Spec: gatewayv1.ReferenceGrantSpec{
		From: []gatewayv1.ReferenceGrantFrom{from},
		To:   []gatewayv1.ReferenceGrantTo{to},
	}}
	g.Namespace, g.Name, g.ResourceVersion = benchSourceNamespace, "g", "1"
	return g
}

// benchInformer returns a wrapped informer holding the benchmark's claims and
// the queue its loop handler fills.
func benchInformer(b *testing.B) (*Informer, workqueue.TypedInterface[types.UID]) {
	shared := cache.NewSharedIndexInformer(&cache.ListWatch{}, &v1.PersistentVolumeClaim{}, 0, cache.Indexers{})
	inf, err := Wrap(shared)
	if err != nil {
		b.Fatal(err)
	}
	q := workqueue.NewTyped[types.UID]()
	b.Cleanup(q.ShutDown)
	if _, err := inf.AddEventHandler(queueHandler{q: q}); err != nil {
		b.Fatal(err)
	}
	for ns := range benchNamespaces {
		for i := range benchClaimsPerNS {
			c := claim(fmt.Sprintf("ns-%d", ns), fmt.Sprintf("restore-%d", i), datasource.SnapshotKind, benchSourceNamespace, source(fmt.Sprintf("snap-%d", i)))
			c.UID = types.UID(fmt.Sprintf("uid-%d-%d", ns, i))
			if err := shared.GetIndexer().Add(c); err != nil {
				b.Fatal(err)
			}
		}
	}
	return inf, q
}
