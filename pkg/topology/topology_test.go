package topology

import (
	"fmt"
	"maps"
	"reflect"
	"strings"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	v1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	storagelisters "k8s.io/client-go/listers/storage/v1"
	"k8s.io/client-go/tools/cache"
)

const (
	driver = "hostpath.csi.k8s.io"
	zone   = "topology.kubernetes.io/zone"
	rack   = "example.com/rack"
)

type seg = map[string]string

func term(exprs ...v1.TopologySelectorLabelRequirement) v1.TopologySelectorTerm {
	return v1.TopologySelectorTerm{MatchLabelExpressions: exprs}
}

func expr(key string, values ...string) v1.TopologySelectorLabelRequirement {
	return v1.TopologySelectorLabelRequirement{Key: key, Values: values}
}

func TestFlattenAllowed(t *testing.T) {
	tests := []struct {
		name  string
		terms []v1.TopologySelectorTerm
		want  []seg
	}{
		{name: "no terms"},
		{name: "one value", terms: []v1.TopologySelectorTerm{term(expr(zone, "a"))}, want: []seg{{zone: "a"}}},
		{
			name:  "values of one key are alternatives",
			terms: []v1.TopologySelectorTerm{term(expr(zone, "a", "b"))},
			want:  []seg{{zone: "a"}, {zone: "b"}},
		},
		{
			name:  "several keys give the cartesian product",
			terms: []v1.TopologySelectorTerm{term(expr(zone, "a", "b"), expr(rack, "1", "2"))},
			want:  []seg{{zone: "a", rack: "1"}, {zone: "a", rack: "2"}, {zone: "b", rack: "1"}, {zone: "b", rack: "2"}},
		},
		{
			name:  "terms are alternatives, duplicates dropped",
			terms: []v1.TopologySelectorTerm{term(expr(zone, "a")), term(expr(zone, "b", "a")), term(expr(zone, "a"))},
			want:  []seg{{zone: "a"}, {zone: "b"}},
		},
		{
			name:  "a key without values allows nothing",
			terms: []v1.TopologySelectorTerm{term(expr(zone, "a"), expr(rack)), term(expr(zone, "b"))},
			want:  []seg{{zone: "b"}},
		},
		{
			name:  "an empty term allows nothing",
			terms: []v1.TopologySelectorTerm{term()},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := flattenAllowed(tc.terms); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("flattenAllowed() = %v, want %v", got, tc.want)
			}
		})
	}
}

// cluster is what the builder's caches hold: nodes with labels, and the
// topology keys each node's CSINode reports for driver (nil: no CSINode;
// empty: the driver is not registered there).
type cluster struct {
	nodes    map[string]map[string]string
	csiNodes map[string][]string
}

func (c cluster) builder(t *testing.T) *Builder {
	t.Helper()
	nodes := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
	csiNodes := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
	for name, labels := range c.nodes {
		if err := nodes.Add(&v1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}); err != nil {
			t.Fatal(err)
		}
	}
	for name, keys := range c.csiNodes {
		cn := &storagev1.CSINode{ObjectMeta: metav1.ObjectMeta{Name: name}}
		cn.Spec.Drivers = append(cn.Spec.Drivers, storagev1.CSINodeDriver{Name: "other.csi.example.com", NodeID: name, TopologyKeys: []string{"other/key"}})
		if keys != nil {
			cn.Spec.Drivers = append(cn.Spec.Drivers, storagev1.CSINodeDriver{Name: driver, NodeID: name, TopologyKeys: keys})
		}
		if err := csiNodes.Add(cn); err != nil {
			t.Fatal(err)
		}
	}
	return &Builder{
		Driver:   driver,
		Nodes:    corelisters.NewNodeLister(nodes),
		CSINodes: storagelisters.NewCSINodeLister(csiNodes),
	}
}

func (c cluster) node(name string) *v1.Node {
	return &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: c.nodes[name]}}
}

func segments(ts []*csi.Topology) []seg {
	var out []seg
	for _, t := range ts {
		out = append(out, t.GetSegments())
	}
	return out
}

// isRotation reports whether b is a rotation of a.
func isRotation(a, b []seg) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		rotated := append(append([]seg{}, a[i:]...), a[:i]...)
		if reflect.DeepEqual(rotated, b) {
			return true
		}
	}
	return len(a) == 0
}

func TestRequirements(t *testing.T) {
	// Three zones, rack-level topology in zone a; a node the driver does not
	// run on; a node whose label the driver reports is missing.
	world := cluster{
		nodes: map[string]map[string]string{
			"node-a1":   {zone: "a", rack: "1"},
			"node-a2":   {zone: "a", rack: "2"},
			"node-b":    {zone: "b"},
			"node-c":    {zone: "c"},
			"node-x":    {zone: "x"},
			"node-bare": {},
			"node-fs":   {zone: "b"},
		},
		csiNodes: map[string][]string{
			"node-a1":   {zone, rack},
			"node-a2":   {zone, rack},
			"node-b":    {zone},
			"node-c":    {zone},
			"node-bare": {zone},
			"node-fs":   {},
			// node-x has no CSINode; "gone" has a CSINode but no Node.
			"gone": {zone},
		},
	}
	allowedAB := []v1.TopologySelectorTerm{term(expr(zone, "a", "b"))}

	tests := []struct {
		name      string
		allowed   []v1.TopologySelectorTerm
		selected  string
		strict    bool
		immediate bool
		// empty drops every node and CSINode from the caches.
		empty bool

		wantNil bool
		wantErr string
		// wantMissing: the error says the selected node's Node or CSINode is
		// missing (the caller reschedules)
		wantMissing   bool
		wantRequisite []seg
		// wantPreferred exactly; when nil with wantRotated, preferred must be
		// a rotation of requisite.
		wantPreferred []seg
		wantRotated   bool
	}{
		{
			name:    "nothing constrains the volume",
			wantNil: true,
		},
		{
			name:          "allowedTopologies only",
			allowed:       []v1.TopologySelectorTerm{term(expr(zone, "a", "b", "c"))},
			wantRequisite: []seg{{zone: "a"}, {zone: "b"}, {zone: "c"}},
			wantRotated:   true,
		},
		{
			name:          "allowedTopologies win over immediate topology",
			allowed:       allowedAB,
			immediate:     true,
			wantRequisite: []seg{{zone: "a"}, {zone: "b"}},
			wantRotated:   true,
		},
		{
			name:      "immediate without nodes",
			immediate: true,
			empty:     true,
			wantNil:   true,
		},
		{
			name:      "immediate: every segment where the driver runs",
			immediate: true,
			wantRequisite: []seg{
				{rack: "1", zone: "a"}, {rack: "2", zone: "a"}, {zone: "b"}, {zone: "c"},
			},
			wantRotated: true,
		},
		{
			name:          "selected node, strict: that node's segment only",
			selected:      "node-a1",
			strict:        true,
			wantRequisite: []seg{{zone: "a", rack: "1"}},
			wantPreferred: []seg{{zone: "a", rack: "1"}},
		},
		{
			name:          "selected node, strict, inside allowedTopologies",
			allowed:       allowedAB,
			selected:      "node-b",
			strict:        true,
			wantRequisite: []seg{{zone: "b"}},
			wantPreferred: []seg{{zone: "b"}},
		},
		{
			name:          "selected node: segments of nodes with the same keys, its own first in preferred",
			selected:      "node-c",
			wantRequisite: []seg{{zone: "b"}, {zone: "c"}},
			wantPreferred: []seg{{zone: "c"}, {zone: "b"}},
		},
		{
			name:          "selected node with rack keys",
			selected:      "node-a2",
			wantRequisite: []seg{{zone: "a", rack: "1"}, {zone: "a", rack: "2"}},
			wantPreferred: []seg{{zone: "a", rack: "2"}, {zone: "a", rack: "1"}},
		},
		{
			name:          "selected node inside allowedTopologies",
			allowed:       []v1.TopologySelectorTerm{term(expr(zone, "a", "b", "c"))},
			selected:      "node-b",
			wantRequisite: []seg{{zone: "a"}, {zone: "b"}, {zone: "c"}},
			wantPreferred: []seg{{zone: "b"}, {zone: "a"}, {zone: "c"}},
		},
		{
			name:          "selected node finer than allowedTopologies: its segment is added",
			allowed:       allowedAB,
			selected:      "node-a1",
			wantRequisite: []seg{{zone: "a", rack: "1"}, {zone: "a"}, {zone: "b"}},
			wantPreferred: []seg{{zone: "a", rack: "1"}, {zone: "a"}, {zone: "b"}},
		},
		{
			name:     "selected node outside allowedTopologies",
			allowed:  allowedAB,
			selected: "node-c",
			wantErr:  `selected node "node-c" is outside the StorageClass's allowedTopologies`,
		},
		{
			name:     "selected node missing a topology label",
			selected: "node-bare",
			wantErr:  `node "node-bare" has no label "topology.kubernetes.io/zone"`,
		},
		{
			name:        "selected node without CSINode",
			selected:    "node-x",
			wantErr:     `CSINode "node-x" does not exist`,
			wantMissing: true,
		},
		{
			name:        "selected node deleted since the scheduler picked it",
			selected:    "gone",
			wantErr:     `Node "gone" does not exist`,
			wantMissing: true,
		},
		{
			name:     "selected node where the driver reports no keys",
			selected: "node-fs",
			wantErr:  `driver "hostpath.csi.k8s.io" publishes no topology keys on node "node-fs"`,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := world
			if tc.empty {
				w = cluster{}
			}
			b := w.builder(t)
			b.Strict, b.Immediate = tc.strict, tc.immediate
			class := &storagev1.StorageClass{ObjectMeta: metav1.ObjectMeta{Name: "fast"}, Provisioner: driver, AllowedTopologies: tc.allowed}
			var selected *v1.Node
			if tc.selected != "" {
				selected = w.node(tc.selected)
			}

			got, err := b.Requirements(class, selected, "pvc-1234")

			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Requirements() error = %v, want one containing %q", err, tc.wantErr)
				}
				if got := IsNodeMissing(fmt.Errorf("wrapped: %w", err)); got != tc.wantMissing {
					t.Errorf("IsNodeMissing(%v) = %v, want %v", err, got, tc.wantMissing)
				}
				return
			}
			if err != nil {
				t.Fatalf("Requirements() error = %v", err)
			}
			if tc.wantNil {
				if got != nil {
					t.Errorf("Requirements() = %v, want nil", got)
				}
				return
			}
			req, pref := segments(got.GetRequisite()), segments(got.GetPreferred())
			if !reflect.DeepEqual(req, tc.wantRequisite) {
				t.Errorf("requisite = %v, want %v", req, tc.wantRequisite)
			}
			switch {
			case tc.wantRotated:
				if !isRotation(req, pref) {
					t.Errorf("preferred = %v, want a rotation of requisite %v", pref, req)
				}
			case !reflect.DeepEqual(pref, tc.wantPreferred):
				t.Errorf("preferred = %v, want %v", pref, tc.wantPreferred)
			}
		})
	}
}

// TestRotate checks that claims spread their preference over segments, and
// that one claim always gets the same order.
func TestRotate(t *testing.T) {
	segs := []seg{{zone: "a"}, {zone: "b"}, {zone: "c"}}
	tests := []struct {
		name string
		segs []seg
	}{
		{name: "none"},
		{name: "one", segs: segs[:1]},
		{name: "three", segs: segs},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			firsts := map[string]bool{}
			for i := range 50 {
				claim := "pvc-" + strings.Repeat("x", i)
				got := rotate(tc.segs, claim)
				if !isRotation(tc.segs, got) {
					t.Fatalf("rotate(%q) = %v, not a rotation of %v", claim, got, tc.segs)
				}
				if again := rotate(tc.segs, claim); !reflect.DeepEqual(again, got) {
					t.Fatalf("rotate(%q) is not stable: %v then %v", claim, got, again)
				}
				if len(got) > 0 {
					firsts[got[0][zone]] = true
				}
			}
			if len(firsts) != len(tc.segs) {
				t.Errorf("first preferences over 50 claims = %v, want all %d segments", firsts, len(tc.segs))
			}
			if len(tc.segs) > 0 && tc.segs[0][zone] != "a" {
				t.Error("rotate modified its input")
			}
		})
	}
}

func TestNodeAffinity(t *testing.T) {
	in := func(key, value string) v1.NodeSelectorRequirement {
		return v1.NodeSelectorRequirement{Key: key, Operator: v1.NodeSelectorOpIn, Values: []string{value}}
	}
	tests := []struct {
		name       string
		accessible []*csi.Topology
		want       []v1.NodeSelectorTerm
	}{
		{name: "no topology"},
		{name: "only empty segments", accessible: []*csi.Topology{{}, {Segments: map[string]string{}}}},
		{
			name:       "one segment, keys sorted",
			accessible: []*csi.Topology{{Segments: map[string]string{zone: "a", rack: "1"}}},
			want:       []v1.NodeSelectorTerm{{MatchExpressions: []v1.NodeSelectorRequirement{in(rack, "1"), in(zone, "a")}}},
		},
		{
			name:       "segments are alternatives",
			accessible: []*csi.Topology{{Segments: map[string]string{zone: "a"}}, {}, {Segments: map[string]string{zone: "b"}}},
			want: []v1.NodeSelectorTerm{
				{MatchExpressions: []v1.NodeSelectorRequirement{in(zone, "a")}},
				{MatchExpressions: []v1.NodeSelectorRequirement{in(zone, "b")}},
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := NodeAffinity(tc.accessible)
			if tc.want == nil {
				if got != nil {
					t.Errorf("NodeAffinity() = %v, want nil", got)
				}
				return
			}
			if got == nil || got.Required == nil || !reflect.DeepEqual(got.Required.NodeSelectorTerms, tc.want) {
				t.Errorf("NodeAffinity() = %+v, want terms %+v", got, tc.want)
			}
		})
	}
}

// TestRequirementsDoNotShareSegments checks that callers may change what
// they get without corrupting the StorageClass-derived segments.
func TestRequirementsDoNotShareSegments(t *testing.T) {
	b := cluster{}.builder(t)
	class := &storagev1.StorageClass{AllowedTopologies: []v1.TopologySelectorTerm{term(expr(zone, "a"))}}
	got, err := b.Requirements(class, nil, "pvc")
	if err != nil {
		t.Fatal(err)
	}
	got.Requisite[0].Segments[zone] = "changed"
	if p := got.Preferred[0].Segments; !maps.Equal(p, seg{zone: "a"}) {
		t.Errorf("preferred segment = %v after changing requisite, want it unchanged", p)
	}
}

// TestSelectedNodeReadFromCache: the selected node's labels come from the
// builder's cache, not from the copy handed over with the claim, which may
// predate a label the driver's topology key needs.
func TestSelectedNodeReadFromCache(t *testing.T) {
	tests := []struct {
		name string
		// handed is the node object passed in; the cache has zone "b"
		handed  map[string]string
		wantSeg seg
	}{
		{name: "handed copy without the label", handed: map[string]string{}, wantSeg: seg{zone: "b"}},
		{name: "handed copy with an old value", handed: map[string]string{zone: "a"}, wantSeg: seg{zone: "b"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := cluster{nodes: map[string]map[string]string{"node-b": {zone: "b"}}, csiNodes: map[string][]string{"node-b": {zone}}}
			b := w.builder(t)
			b.Strict = true
			handed := &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-b", Labels: tc.handed}}
			got, err := b.Requirements(&storagev1.StorageClass{}, handed, "pvc-1")
			if err != nil {
				t.Fatalf("Requirements() error = %v", err)
			}
			if req := segments(got.GetRequisite()); !reflect.DeepEqual(req, []seg{tc.wantSeg}) {
				t.Errorf("requisite = %v, want %v", req, []seg{tc.wantSeg})
			}
		})
	}
}
