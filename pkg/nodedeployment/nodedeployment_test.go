package nodedeployment

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	v1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"
	storagelisters "k8s.io/client-go/listers/storage/v1"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/sig-storage-lib-external-provisioner/v10/controller"
)

const (
	driver   = "local.csi.example.com"
	topoKey  = "topology.local.csi.example.com/node"
	thisNode = "node-b"
)

func nodeInfo(segments map[string]string) *csi.NodeGetInfoResponse {
	info := &csi.NodeGetInfoResponse{NodeId: "id-" + thisNode}
	if segments != nil {
		info.AccessibleTopology = &csi.Topology{Segments: segments}
	}
	return info
}

func claim(selected string, mods ...func(*v1.PersistentVolumeClaim)) *v1.PersistentVolumeClaim {
	c := &v1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "data", UID: "uid-1", ResourceVersion: "1", Annotations: map[string]string{}},
		Spec: v1.PersistentVolumeClaimSpec{StorageClassName: ptr.To("local"),
			Resources: v1.VolumeResourceRequirements{Requests: v1.ResourceList{v1.ResourceStorage: resource.MustParse("1Gi")}}},
	}
	if selected != "" {
		c.Annotations[AnnSelectedNode] = selected
	}
	for _, m := range mods {
		m(c)
	}
	return c
}

func class(mode storagev1.VolumeBindingMode, allowed ...string) *storagev1.StorageClass {
	c := &storagev1.StorageClass{ObjectMeta: metav1.ObjectMeta{Name: "local"}, Provisioner: driver, VolumeBindingMode: &mode}
	if len(allowed) > 0 {
		c.AllowedTopologies = []v1.TopologySelectorTerm{{MatchLabelExpressions: []v1.TopologySelectorLabelRequirement{{Key: topoKey, Values: allowed}}}}
	}
	return c
}

type env struct {
	n      *Node
	client *fake.Clientset
	claims cache.Indexer
}

// newTestNode is node-b with a fake clientset holding objs, the claim
// informer's cache preloaded with the claims among them (never started).
func newTestNode(t *testing.T, cfg Config, objs ...runtime.Object) *env {
	t.Helper()
	client := fake.NewClientset(objs...)
	factory := informers.NewSharedInformerFactory(client, 0)
	claims := factory.Core().V1().PersistentVolumeClaims()
	classes := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
	for _, o := range objs {
		switch o := o.(type) {
		case *v1.PersistentVolumeClaim:
			if err := claims.Informer().GetIndexer().Add(o); err != nil {
				t.Fatal(err)
			}
		case *storagev1.StorageClass:
			if err := classes.Add(o); err != nil {
				t.Fatal(err)
			}
		}
	}
	cfg.NodeName, cfg.DriverName, cfg.Client, cfg.Claims = thisNode, driver, client, claims
	cfg.Classes = storagelisters.NewStorageClassLister(classes)
	if cfg.NodeInfo == nil {
		cfg.NodeInfo = nodeInfo(map[string]string{topoKey: thisNode})
	}
	if cfg.BaseDelay == 0 {
		cfg.BaseDelay, cfg.MaxDelay = time.Millisecond, 10*time.Millisecond
	}
	n, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return &env{n: n, client: client, claims: claims.Informer().GetIndexer()}
}

// selections are the selected nodes the instance wrote into claims.
func (e *env) selections() []string {
	var out []string
	for _, a := range e.client.Actions() {
		if u, ok := a.(k8stesting.UpdateAction); ok && a.GetResource().Resource == "persistentvolumeclaims" {
			out = append(out, u.GetObject().(*v1.PersistentVolumeClaim).Annotations[AnnSelectedNode])
		}
	}
	return out
}

func capacity(ok bool, err error) CapacityCheck {
	return func(context.Context, *v1.PersistentVolumeClaim, *storagev1.StorageClass, *v1.Node) (bool, error) {
		return ok, err
	}
}

func TestResponsible(t *testing.T) {
	immediate, late := storagev1.VolumeBindingImmediate, storagev1.VolumeBindingWaitForFirstConsumer
	for _, tc := range []struct {
		name string
		// claim is what the loop hands over; cached what the informer holds.
		claim, cached  *v1.PersistentVolumeClaim
		class          *storagev1.StorageClass
		noImmediate    bool
		noTopology     bool
		capacity       CapacityCheck
		want           bool
		wantSelections []string
		wantErr        string
	}{
		{name: "this node selected", claim: claim(thisNode), class: class(late), want: true},
		{name: "another node selected", claim: claim("node-a"), class: class(late)},
		{name: "late binding, no node selected yet: the scheduler's", claim: claim(""), class: class(late)},
		{name: "immediate: this node selected after the delay", claim: claim(""), class: class(immediate), wantSelections: []string{thisNode}},
		{name: "immediate, immediate binding off", claim: claim(""), class: class(immediate), noImmediate: true},
		{name: "immediate, another node won while waiting", claim: claim(""), cached: claim("node-c"), class: class(immediate)},
		{name: "immediate, allowed topologies admit this node", claim: claim(""), class: class(immediate, "node-a", thisNode), wantSelections: []string{thisNode}},
		{name: "immediate, allowed topologies exclude this node", claim: claim(""), class: class(immediate, "node-a")},
		{name: "immediate, allowed topologies but the driver has no topology", claim: claim(""), class: class(immediate, "node-a"), noTopology: true,
			wantSelections: []string{thisNode}},
		{name: "immediate, no room on this node", claim: claim(""), class: class(immediate), capacity: capacity(false, nil)},
		{name: "immediate, capacity check fails: selected anyway", claim: claim(""), class: class(immediate), capacity: capacity(false, errors.New("GetCapacity: unavailable")),
			wantSelections: []string{thisNode}},
		{name: "immediate, claim replaced", claim: claim(""), cached: claim("", func(c *v1.PersistentVolumeClaim) { c.UID = "uid-2" }), class: class(immediate),
			wantErr: "claim was replaced"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cached := tc.cached
			if cached == nil {
				cached = tc.claim
			}
			cfg := Config{ImmediateBinding: !tc.noImmediate}
			if tc.noTopology {
				cfg.NodeInfo = nodeInfo(nil)
			}
			e := newTestNode(t, cfg, cached, tc.class)
			check := tc.capacity
			if check == nil {
				check = capacity(true, nil)
			}
			got, err := e.n.Responsible(context.Background(), tc.claim, nil, check)
			if got != tc.want || (err == nil) != (tc.wantErr == "") || (err != nil && !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("Responsible = %v, %v; want %v, error %q", got, err, tc.want, tc.wantErr)
			}
			if got := e.selections(); fmt.Sprint(got) != fmt.Sprint(tc.wantSelections) {
				t.Errorf("claim updates selecting %v, want %v", got, tc.wantSelections)
			}
		})
	}
}

// TestSelectionConflictRetried: another instance wrote the claim first; the
// next attempt sees it won and stops, without writing again.
func TestSelectionConflictRetried(t *testing.T) {
	c := claim("")
	e := newTestNode(t, Config{ImmediateBinding: true}, c, class(storagev1.VolumeBindingImmediate))
	var once sync.Once
	e.client.PrependReactor("update", "persistentvolumeclaims", func(k8stesting.Action) (bool, runtime.Object, error) {
		handled := false
		once.Do(func() {
			handled = true
			// node-a's update reaches the cache as the conflict is returned
			_ = e.claims.Update(claim("node-a"))
		})
		if handled {
			return true, nil, apierrors.NewConflict(schema.GroupResource{Resource: "persistentvolumeclaims"}, c.Name, errors.New("changed"))
		}
		return false, nil, nil
	})
	if ok, err := e.n.Responsible(context.Background(), c, nil, capacity(true, nil)); ok || err != nil {
		t.Fatalf("Responsible = %v, %v; want false, nil", ok, err)
	}
	if got := e.selections(); len(got) != 1 {
		t.Errorf("claim updates %v, want the one that conflicted", got)
	}
	if got := e.n.limiter.Attempts(c.UID); got != 0 {
		t.Errorf("%d attempts remembered after node-a won, want 0 (a reschedule starts over)", got)
	}
}

// TestDelayGrowsWithAttempts: base·2^n up to max, less a random part of
// base; Forget starts over.
func TestDelayGrowsWithAttempts(t *testing.T) {
	l := newJitterLimiter(20*time.Second, 60*time.Second)
	for _, tc := range []struct {
		rand float64
		want time.Duration
	}{
		{0, 20 * time.Second},
		{0.5, 30 * time.Second},
		{0, 60 * time.Second},
		{0.25, 55 * time.Second},
	} {
		l.rand = func() float64 { return tc.rand }
		if got := l.When("uid"); got != tc.want {
			t.Errorf("When (rand %v) = %v, want %v", tc.rand, got, tc.want)
		}
	}
	l.Forget("uid")
	l.rand = func() float64 { return 0.999 }
	if got := l.When("uid"); got <= 0 || got > 20*time.Millisecond {
		t.Errorf("When after Forget = %v, want a little above 0", got)
	}
	if got := l.When(types.UID("other")); got > 20*time.Second {
		t.Errorf("another claim waits %v, want at most the base", got)
	}
}

func TestAccessible(t *testing.T) {
	affinity := func(key string, op v1.NodeSelectorOperator, values ...string) *v1.VolumeNodeAffinity {
		return &v1.VolumeNodeAffinity{Required: &v1.NodeSelector{NodeSelectorTerms: []v1.NodeSelectorTerm{
			{MatchExpressions: []v1.NodeSelectorRequirement{{Key: key, Operator: op, Values: values}}}}}}
	}
	for _, tc := range []struct {
		name     string
		segments map[string]string
		affinity *v1.VolumeNodeAffinity
		want     bool
	}{
		{name: "volume of this node", segments: map[string]string{topoKey: thisNode}, affinity: affinity(topoKey, v1.NodeSelectorOpIn, thisNode), want: true},
		{name: "volume of another node", segments: map[string]string{topoKey: thisNode}, affinity: affinity(topoKey, v1.NodeSelectorOpIn, "node-a")},
		{name: "NotIn", segments: map[string]string{topoKey: thisNode}, affinity: affinity(topoKey, v1.NodeSelectorOpNotIn, "node-a"), want: true},
		{name: "key this node lacks", segments: map[string]string{topoKey: thisNode}, affinity: affinity("zone", v1.NodeSelectorOpIn, "a")},
		{name: "volume without affinity", segments: map[string]string{topoKey: thisNode}, want: true},
		{name: "node without topology", affinity: affinity(topoKey, v1.NodeSelectorOpIn, "node-a"), want: true},
		{name: "empty term matches nothing", segments: map[string]string{topoKey: thisNode},
			affinity: &v1.VolumeNodeAffinity{Required: &v1.NodeSelector{NodeSelectorTerms: []v1.NodeSelectorTerm{{}}}}},
		{name: "by node name", segments: map[string]string{topoKey: thisNode},
			affinity: &v1.VolumeNodeAffinity{Required: &v1.NodeSelector{NodeSelectorTerms: []v1.NodeSelectorTerm{
				{MatchFields: []v1.NodeSelectorRequirement{{Key: "metadata.name", Operator: v1.NodeSelectorOpIn, Values: []string{thisNode}}}}}}}, want: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newTestNode(t, Config{NodeInfo: nodeInfo(tc.segments)})
			pv := &v1.PersistentVolume{Spec: v1.PersistentVolumeSpec{NodeAffinity: tc.affinity}}
			if got, err := e.n.Accessible(pv); got != tc.want || err != nil {
				t.Errorf("Accessible = %v, %v; want %v", got, err, tc.want)
			}
		})
	}
}

// fakeInner records what reaches the node's provisioner.
type fakeInner struct {
	controller.Provisioner
	provisioned, deleted []string
}

func (f *fakeInner) Provision(_ context.Context, o controller.ProvisionOptions) (*v1.PersistentVolume, controller.ProvisioningState, error) {
	f.provisioned = append(f.provisioned, o.PVC.Name)
	return &v1.PersistentVolume{}, controller.ProvisioningFinished, nil
}
func (f *fakeInner) Delete(_ context.Context, pv *v1.PersistentVolume) error {
	f.deleted = append(f.deleted, pv.Name)
	return nil
}
func (f *fakeInner) SupportsBlock(context.Context) bool                      { return true }
func (f *fakeInner) ShouldDelete(context.Context, *v1.PersistentVolume) bool { return true }
func (f *fakeInner) HasCapacity(context.Context, *v1.PersistentVolumeClaim, *storagev1.StorageClass, *v1.Node) (bool, error) {
	return true, nil
}

func TestWrap(t *testing.T) {
	e := newTestNode(t, Config{})
	inner := &fakeInner{}
	p := e.n.Wrap(inner)
	late := class(storagev1.VolumeBindingWaitForFirstConsumer)
	mine, theirs := claim(thisNode, func(c *v1.PersistentVolumeClaim) { c.Name = "mine" }), claim("node-a", func(c *v1.PersistentVolumeClaim) { c.Name = "theirs" })
	if !p.ShouldProvision(context.Background(), mine) || p.ShouldProvision(context.Background(), theirs) {
		t.Errorf("ShouldProvision: want this node's claim only")
	}
	if _, state, err := p.Provision(context.Background(), controller.ProvisionOptions{PVC: theirs, StorageClass: late}); state != controller.ProvisioningNoChange || !isIgnored(err) {
		t.Errorf("Provision of another node's claim = %v, %v; want NoChange and an IgnoredError", state, err)
	}
	if _, _, err := p.Provision(context.Background(), controller.ProvisionOptions{PVC: mine, StorageClass: late}); err != nil {
		t.Errorf("Provision of this node's claim: %v", err)
	}
	pvOn := func(name, node string) *v1.PersistentVolume {
		return &v1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: v1.PersistentVolumeSpec{NodeAffinity: &v1.VolumeNodeAffinity{
			Required: &v1.NodeSelector{NodeSelectorTerms: []v1.NodeSelectorTerm{{MatchExpressions: []v1.NodeSelectorRequirement{
				{Key: topoKey, Operator: v1.NodeSelectorOpIn, Values: []string{node}}}}}}}}}
	}
	if err := p.Delete(context.Background(), pvOn("pv-a", "node-a")); !isIgnored(err) {
		t.Errorf("Delete of node-a's volume = %v, want an IgnoredError", err)
	}
	if err := p.Delete(context.Background(), pvOn("pv-b", thisNode)); err != nil {
		t.Errorf("Delete of this node's volume: %v", err)
	}
	if fmt.Sprint(inner.provisioned, inner.deleted) != "[mine] [pv-b]" {
		t.Errorf("inner provisioned %v and deleted %v, want [mine] and [pv-b]", inner.provisioned, inner.deleted)
	}
}

func isIgnored(err error) bool {
	_, ok := err.(*controller.IgnoredError)
	return ok
}

func TestListers(t *testing.T) {
	e := newTestNode(t, Config{})
	nodes, csiNodes := e.n.Listers()
	node, err := nodes.Get(thisNode)
	if err != nil || node.Labels[topoKey] != thisNode {
		t.Fatalf("Node = %v, %v; want %s labelled with its segment", node, err, thisNode)
	}
	cn, err := csiNodes.Get(thisNode)
	if err != nil || len(cn.Spec.Drivers) != 1 {
		t.Fatalf("CSINode = %v, %v", cn, err)
	}
	if d := cn.Spec.Drivers[0]; d.Name != driver || d.NodeID != "id-"+thisNode || fmt.Sprint(d.TopologyKeys) != "["+topoKey+"]" {
		t.Errorf("CSINode driver %+v", d)
	}
	if _, err := nodes.Get("node-a"); !apierrors.IsNotFound(err) {
		t.Errorf("other node: %v, want not found", err)
	}
	if s, _ := e.n.Segments(); len(s) != 1 || s[0][topoKey] != thisNode {
		t.Errorf("Segments = %v", s)
	}
}

func TestManagedBy(t *testing.T) {
	long := strings.Repeat("n", 50)
	for _, tc := range []struct{ node, want string }{
		{node: "node-b", want: "external-provisioner-node-b"},
		// 71 characters: the base shortened, the hash of the base between.
		{node: long, want: "ext-" + fnvHex("external-provisioner") + "-" + long},
		// the node alone too long: what fits of the base and the hash of all
		{node: strings.Repeat("x", 70), want: "external-provisioner-" + fnvHex("external-provisioner-"+strings.Repeat("x", 70))},
	} {
		e := newTestNode(t, Config{})
		e.n.cfg.NodeName = tc.node
		got := e.n.ManagedBy("external-provisioner")
		if got != tc.want || len(got) > 63 {
			t.Errorf("ManagedBy(%q) = %q, want %q", tc.node, got, tc.want)
		}
	}
	if got := fnvHex("external-provisioner"); len(got) != 8 {
		t.Errorf("hash %q, want 8 hex digits", got)
	}
}

func TestNewNeeds(t *testing.T) {
	for _, tc := range []struct {
		name string
		mod  func(*Config)
		want string
	}{
		{name: "no NODE_NAME", mod: func(c *Config) { c.NodeName = "" }, want: "NODE_NAME"},
		{name: "no node ID", mod: func(c *Config) { c.NodeInfo = &csi.NodeGetInfoResponse{} }, want: "node ID"},
		{name: "delays", mod: func(c *Config) { c.BaseDelay, c.MaxDelay = 2*time.Second, time.Second }, want: "delay"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			client := fake.NewClientset()
			cfg := Config{NodeName: thisNode, NodeInfo: nodeInfo(nil), Client: client, BaseDelay: time.Second, MaxDelay: time.Minute,
				Claims: informers.NewSharedInformerFactory(client, 0).Core().V1().PersistentVolumeClaims()}
			tc.mod(&cfg)
			if _, err := New(cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("New = %v, want an error about %s", err, tc.want)
			}
		})
	}
}

func TestAdmits(t *testing.T) {
	term := func(exprs ...v1.TopologySelectorLabelRequirement) v1.TopologySelectorTerm {
		return v1.TopologySelectorTerm{MatchLabelExpressions: exprs}
	}
	in := func(key string, values ...string) v1.TopologySelectorLabelRequirement {
		return v1.TopologySelectorLabelRequirement{Key: key, Values: values}
	}
	segment := map[string]string{topoKey: thisNode, "zone": "a"}
	for _, tc := range []struct {
		name    string
		allowed []v1.TopologySelectorTerm
		want    bool
	}{
		{name: "value listed", allowed: []v1.TopologySelectorTerm{term(in(topoKey, "node-a", thisNode))}, want: true},
		{name: "value not listed", allowed: []v1.TopologySelectorTerm{term(in(topoKey, "node-a"))}},
		{name: "all expressions of a term", allowed: []v1.TopologySelectorTerm{term(in(topoKey, thisNode), in("zone", "b"))}},
		{name: "any term", allowed: []v1.TopologySelectorTerm{term(in("zone", "b")), term(in("zone", "a"))}, want: true},
		{name: "key the node lacks", allowed: []v1.TopologySelectorTerm{term(in("rack", "1"))}},
	} {
		if got := admits(tc.allowed, segment); got != tc.want {
			t.Errorf("%s: admits = %v, want %v", tc.name, got, tc.want)
		}
	}
}
