package capacity

import (
	"maps"
	"reflect"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/protobuf/proto"
	storagev1 "k8s.io/api/storage/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/utils/ptr"
)

const (
	wffc      = storagev1.VolumeBindingWaitForFirstConsumer
	immediate = storagev1.VolumeBindingImmediate
)

func TestSync(t *testing.T) {
	nodeA, csiNodeA := nodeIn("node-a", "a")
	nodeB, csiNodeB := nodeIn("node-b", "b")
	nodeB2, csiNodeB2 := nodeIn("node-b2", "b")
	twoZones := []runtime.Object{nodeA, csiNodeA, nodeB, csiNodeB, nodeB2, csiNodeB2}
	fast := class("fast", driver, wffc, nil)
	sizes := map[string]int64{"a": 10 << 30, "b": 20 << 30, "c": 5 << 30, "": 1 << 30}

	tests := []struct {
		name       string
		immediate  bool
		noTopology bool
		objs       []runtime.Object
		maxSizes   map[string]int64
		want       []string
		wantWrites map[string]int
	}{
		{
			name:       "one object per class and segment",
			objs:       append([]runtime.Object{fast, class("slow", driver, wffc, nil)}, twoZones...),
			want:       []string{"fast a 10Gi", "fast b 20Gi", "slow a 10Gi", "slow b 20Gi"},
			wantWrites: map[string]int{"create": 4},
		},
		{
			name:       "immediate binding skipped without the flag",
			objs:       append([]runtime.Object{fast, class("now", driver, immediate, nil)}, twoZones...),
			want:       []string{"fast a 10Gi", "fast b 20Gi"},
			wantWrites: map[string]int{"create": 2},
		},
		{
			name:       "immediate binding published with the flag",
			immediate:  true,
			objs:       append([]runtime.Object{fast, class("now", driver, immediate, nil)}, twoZones...),
			want:       []string{"fast a 10Gi", "fast b 20Gi", "now a 10Gi", "now b 20Gi"},
			wantWrites: map[string]int{"create": 4},
		},
		{
			name:       "other drivers' classes skipped",
			objs:       append([]runtime.Object{fast, class("theirs", "other.csi.example.com", wffc, nil)}, twoZones...),
			want:       []string{"fast a 10Gi", "fast b 20Gi"},
			wantWrites: map[string]int{"create": 2},
		},
		{
			name:       "maximum volume size when the driver returns it",
			objs:       append([]runtime.Object{fast}, twoZones...),
			maxSizes:   map[string]int64{"a": 1 << 30},
			want:       []string{"fast a 10Gi max=1Gi", "fast b 20Gi"},
			wantWrites: map[string]int{"create": 2},
		},
		{
			name:       "no topology: one object per class, for every node",
			noTopology: true,
			objs:       []runtime.Object{fast, class("slow", driver, wffc, nil)},
			want:       []string{"fast - 1Gi", "slow - 1Gi"},
			wantWrites: map[string]int{"create": 2},
		},
		{
			name:       "no topology: upstream's object (empty nodeTopology) adopted",
			noTopology: true,
			objs:       []runtime.Object{fast, published("csisc-up", "fast", "", "1Gi")},
			want:       []string{"fast - 1Gi"},
		},
		{
			name:       "no topology: an object without nodeTopology (no node) replaced",
			noTopology: true,
			objs:       []runtime.Object{fast, withoutTopology(published("csisc-old", "fast", "", "1Gi"))},
			want:       []string{"fast - 1Gi"},
			wantWrites: map[string]int{"create": 1, "delete": 1},
		},
		{
			name:       "with topology: an object for every node deleted",
			objs:       append([]runtime.Object{fast, published("csisc-all", "fast", "", "1Gi")}, twoZones...),
			want:       []string{"fast a 10Gi", "fast b 20Gi"},
			wantWrites: map[string]int{"create": 2, "delete": 1},
		},
		{
			name:       "updated when capacity changes",
			objs:       append([]runtime.Object{fast, published("csisc-a", "fast", "a", "3Gi"), published("csisc-b", "fast", "b", "20Gi")}, twoZones...),
			want:       []string{"fast a 10Gi", "fast b 20Gi"},
			wantWrites: map[string]int{"update": 1},
		},
		{
			name:       "deleted when the class goes away",
			objs:       append([]runtime.Object{published("csisc-a", "gone", "a", "3Gi")}, twoZones...),
			wantWrites: map[string]int{"delete": 1},
		},
		{
			name:       "deleted when the class is another driver's now",
			objs:       append([]runtime.Object{class("fast", "other.csi.example.com", wffc, nil), published("csisc-a", "fast", "a", "10Gi")}, twoZones...),
			wantWrites: map[string]int{"delete": 1},
		},
		{
			name:       "deleted when the segment goes away",
			objs:       append([]runtime.Object{fast, published("csisc-c", "fast", "c", "5Gi")}, twoZones...),
			want:       []string{"fast a 10Gi", "fast b 20Gi"},
			wantWrites: map[string]int{"create": 2, "delete": 1},
		},
		{
			name:       "duplicates deleted",
			objs:       append([]runtime.Object{fast, published("csisc-a1", "fast", "a", "10Gi"), published("csisc-a2", "fast", "a", "10Gi")}, twoZones...),
			want:       []string{"fast a 10Gi", "fast b 20Gi"},
			wantWrites: map[string]int{"create": 1, "delete": 1},
		},
		{
			name:       "no driver nodes: nothing published",
			objs:       []runtime.Object{fast, published("csisc-a", "fast", "a", "10Gi")},
			wantWrites: map[string]int{"delete": 1},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fcsi := &fakeCSI{sizes: sizes, maxSizes: tc.maxSizes}
			f := newFixture(t, Config{ImmediateBinding: tc.immediate}, !tc.noTopology, fcsi, tc.objs...)
			f.syncAll(t)
			if got := f.objects(t); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("objects %q, want %q", got, tc.want)
			}
			if got := f.writes(); !maps.Equal(got, tc.wantWrites) && !(len(got) == 0 && len(tc.wantWrites) == 0) {
				t.Errorf("writes %v, want %v", got, tc.wantWrites)
			}
			// A second round with nothing changed writes nothing more.
			f.client.ClearActions()
			f.syncAll(t)
			if got := f.writes(); len(got) != 0 {
				t.Errorf("second sync wrote %v, want nothing", got)
			}
		})
	}
}

func withoutTopology(sc *storagev1.CSIStorageCapacity) *storagev1.CSIStorageCapacity {
	sc.NodeTopology = nil
	return sc
}

// TestGetCapacityRequest checks what the driver is asked, against upstream
// v6.3.0: the class's parameters as they are, no volume capabilities, the
// segment as accessible topology (none without topology).
func TestGetCapacityRequest(t *testing.T) {
	nodeA, csiNodeA := nodeIn("node-a", "a")
	reserved := map[string]string{
		"type":                      "ssd",
		"csi.storage.k8s.io/fstype": "xfs",
		"csi.storage.k8s.io/provisioner-secret-name":      "s",
		"csi.storage.k8s.io/provisioner-secret-namespace": "ns",
	}
	tests := []struct {
		name       string
		params     map[string]string
		noTopology bool
		want       *csi.GetCapacityRequest
	}{
		{
			name:   "segment as accessible topology",
			params: map[string]string{"type": "ssd"},
			want: &csi.GetCapacityRequest{
				Parameters:         map[string]string{"type": "ssd"},
				AccessibleTopology: &csi.Topology{Segments: map[string]string{zone: "a"}},
			},
		},
		{
			name:   "reserved csi.storage.k8s.io/ keys passed as they are",
			params: reserved,
			want: &csi.GetCapacityRequest{
				Parameters:         reserved,
				AccessibleTopology: &csi.Topology{Segments: map[string]string{zone: "a"}},
			},
		},
		{
			name:       "no topology: no accessible topology",
			params:     map[string]string{"type": "ssd"},
			noTopology: true,
			want:       &csi.GetCapacityRequest{Parameters: map[string]string{"type": "ssd"}},
		},
		{
			name:       "no parameters",
			noTopology: true,
			want:       &csi.GetCapacityRequest{},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fcsi := &fakeCSI{sizes: map[string]int64{"a": 1 << 30, "": 1 << 30}}
			objs := []runtime.Object{class("fast", driver, wffc, tc.params)}
			if !tc.noTopology {
				objs = append(objs, nodeA, csiNodeA)
			}
			// --default-fstype is CreateVolume's, not GetCapacity's.
			f := newFixture(t, Config{}, !tc.noTopology, fcsi, objs...)
			f.syncAll(t)
			if len(fcsi.requests) != 1 {
				t.Fatalf("GetCapacity calls %d, want 1", len(fcsi.requests))
			}
			if got := fcsi.requests[0]; !proto.Equal(got, tc.want) {
				t.Errorf("GetCapacity request\n%v\nwant\n%v", got, tc.want)
			}
		})
	}
}

func TestPublishedObject(t *testing.T) {
	nodeA, csiNodeA := nodeIn("node-a", "a")
	owner := &metav1.OwnerReference{APIVersion: "apps/v1", Kind: "StatefulSet", Name: "csi-driver", UID: "sts-uid", Controller: ptr.To(true)}
	fcsi := &fakeCSI{sizes: map[string]int64{"a": 1 << 30}}
	f := newFixture(t, Config{Owner: owner}, true, fcsi, class("fast", driver, wffc, nil), nodeA, csiNodeA)
	f.syncAll(t)

	list, _ := f.client.StorageV1().CSIStorageCapacities(ns).List(t.Context(), metav1.ListOptions{})
	if len(list.Items) != 1 {
		t.Fatalf("%d objects, want 1", len(list.Items))
	}
	sc := list.Items[0]
	if sc.GenerateName != "csisc-" {
		t.Errorf("generateName %q, want csisc-", sc.GenerateName)
	}
	if want := map[string]string{DriverLabel: driver, ManagedByLabel: ManagedByValue}; !maps.Equal(sc.Labels, want) {
		t.Errorf("labels %v, want %v", sc.Labels, want)
	}
	if len(sc.OwnerReferences) != 1 || sc.OwnerReferences[0].UID != "sts-uid" {
		t.Errorf("owner references %+v, want the StatefulSet", sc.OwnerReferences)
	}
	if want := (metav1.LabelSelector{MatchLabels: map[string]string{zone: "a"}}); !reflect.DeepEqual(*sc.NodeTopology, want) {
		t.Errorf("nodeTopology %+v, want %+v", sc.NodeTopology, want)
	}
}

func TestAdoptsUpstreamObjects(t *testing.T) {
	nodeA, csiNodeA := nodeIn("node-a", "a")
	owner := &metav1.OwnerReference{APIVersion: "apps/v1", Kind: "Deployment", Name: "csi-driver", UID: "new-uid", Controller: ptr.To(true)}
	old := published("csisc-old", "fast", "a", "1Gi")
	old.OwnerReferences = []metav1.OwnerReference{{APIVersion: "v1", Kind: "Pod", Name: "old-pod", UID: "old-uid"}}
	f := newFixture(t, Config{Owner: owner}, true, &fakeCSI{sizes: map[string]int64{"a": 1 << 30}},
		class("fast", driver, wffc, nil), nodeA, csiNodeA, old)
	f.syncAll(t)
	if w := f.writes(); !maps.Equal(w, map[string]int{"update": 1}) {
		t.Errorf("writes %v, want one update", w)
	}

	got, err := f.client.StorageV1().CSIStorageCapacities(ns).Get(t.Context(), "csisc-old", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("the existing object was not kept: %v", err)
	}
	if len(got.OwnerReferences) != 1 || got.OwnerReferences[0].UID != "new-uid" {
		t.Errorf("owner references %+v, want this sidecar's owner", got.OwnerReferences)
	}
}

func TestListOptions(t *testing.T) {
	var o metav1.ListOptions
	ListOptions(driver, "")(&o)
	if want := "csi.storage.k8s.io/drivername=" + driver + ",csi.storage.k8s.io/managed-by=external-provisioner"; o.LabelSelector != want {
		t.Errorf("label selector %q, want %q", o.LabelSelector, want)
	}
}

// fixedSegments is the capacity.Segments of node mode: one node's segment.
type fixedSegments []map[string]string

func (f fixedSegments) Segments() ([]map[string]string, error) { return f, nil }

// TestNodeMode: a node's instance publishes for its node's segment alone,
// with its node's managed-by value, and needs no Node or CSINode informer.
func TestNodeMode(t *testing.T) {
	fcsi := &fakeCSI{sizes: map[string]int64{"b": 20 << 30}}
	cfg := Config{Topology: fixedSegments{{zone: "b"}}, ManagedBy: "external-provisioner-node-b"}
	f := newFixture(t, cfg, false, fcsi, class("fast", driver, wffc, nil))
	f.syncAll(t)
	if got, want := f.objects(t), []string{"fast b 20Gi"}; !reflect.DeepEqual(got, want) {
		t.Errorf("objects %v, want %v", got, want)
	}
	list, _ := f.client.StorageV1().CSIStorageCapacities(ns).List(t.Context(), metav1.ListOptions{})
	if want := map[string]string{DriverLabel: driver, ManagedByLabel: "external-provisioner-node-b"}; len(list.Items) != 1 || !maps.Equal(list.Items[0].Labels, want) {
		t.Errorf("objects %+v, want one labelled %v", list.Items, want)
	}
	var o metav1.ListOptions
	ListOptions(driver, "external-provisioner-node-b")(&o)
	if want := "csi.storage.k8s.io/drivername=" + driver + ",csi.storage.k8s.io/managed-by=external-provisioner-node-b"; o.LabelSelector != want {
		t.Errorf("label selector %q, want %q", o.LabelSelector, want)
	}
}
