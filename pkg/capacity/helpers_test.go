package capacity

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/wrapperspb"
	v1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/crossns/external-provisioner/pkg/topology"
)

const (
	driver = "test.csi.example.com"
	ns     = "csi"
	zone   = "topology.kubernetes.io/zone"
)

// fakeCSI answers GetCapacity with a size per zone ("" without topology)
// and records the requests.
type fakeCSI struct {
	mu       sync.Mutex
	sizes    map[string]int64
	maxSizes map[string]int64
	requests []*csi.GetCapacityRequest
}

func (f *fakeCSI) GetCapacity(_ context.Context, req *csi.GetCapacityRequest, _ ...grpc.CallOption) (*csi.GetCapacityResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.requests = append(f.requests, req)
	z := req.GetAccessibleTopology().GetSegments()[zone]
	size, ok := f.sizes[z]
	if !ok {
		return nil, fmt.Errorf("no capacity known for zone %q", z)
	}
	resp := &csi.GetCapacityResponse{AvailableCapacity: size}
	if m, ok := f.maxSizes[z]; ok {
		resp.MaximumVolumeSize = wrapperspb.Int64(m)
	}
	return resp, nil
}

func class(name, provisioner string, mode storagev1.VolumeBindingMode, params map[string]string) *storagev1.StorageClass {
	return &storagev1.StorageClass{
		ObjectMeta:        metav1.ObjectMeta{Name: name, ResourceVersion: "1"},
		Provisioner:       provisioner,
		VolumeBindingMode: &mode,
		Parameters:        params,
	}
}

// nodeIn returns a Node in a zone and its CSINode reporting the zone key.
func nodeIn(name, z string) (*v1.Node, *storagev1.CSINode) {
	return &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{zone: z}}},
		&storagev1.CSINode{
			ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec:       storagev1.CSINodeSpec{Drivers: []storagev1.CSINodeDriver{{Name: driver, NodeID: name, TopologyKeys: []string{zone}}}},
		}
}

// published returns an object as this sidecar (and upstream) publishes it;
// z == "" means no topology: an empty nodeTopology, every node.
func published(name, className, z, size string) *storagev1.CSIStorageCapacity {
	sc := &storagev1.CSIStorageCapacity{
		ObjectMeta: metav1.ObjectMeta{
			Name: name, Namespace: ns, UID: types.UID("uid-" + name),
			Labels: map[string]string{DriverLabel: driver, ManagedByLabel: ManagedByValue},
		},
		StorageClassName: className,
		Capacity:         ptrQ(size),
		NodeTopology:     &metav1.LabelSelector{},
	}
	if z != "" {
		sc.NodeTopology.MatchLabels = map[string]string{zone: z}
	}
	return sc
}

func ptrQ(s string) *resource.Quantity {
	q := resource.MustParse(s)
	return &q
}

type fixture struct {
	client *fake.Clientset
	csi    *fakeCSI
	ctrl   *Controller
}

// newFixture preloads objects into a fake clientset and into the informers'
// caches (which are never started) and builds a controller over them.
func newFixture(t *testing.T, cfg Config, withTopology bool, fcsi *fakeCSI, objs ...runtime.Object) *fixture {
	t.Helper()
	client := fake.NewClientset(objs...)
	generated := 0
	// The fake clientset does not implement generateName.
	client.PrependReactor("create", "csistoragecapacities", func(a k8stesting.Action) (bool, runtime.Object, error) {
		sc := a.(k8stesting.CreateAction).GetObject().(*storagev1.CSIStorageCapacity)
		if sc.Name == "" {
			generated++
			sc.Name = fmt.Sprintf("%s%d", sc.GenerateName, generated)
			sc.UID = types.UID(sc.Name)
		}
		return false, nil, nil
	})
	factory := informers.NewSharedInformerFactory(client, 0)
	cfg.DriverName, cfg.Client, cfg.CSI, cfg.Namespace = driver, client, fcsi, ns
	cfg.Classes = factory.Storage().V1().StorageClasses()
	cfg.Capacities = factory.Storage().V1().CSIStorageCapacities()
	if withTopology {
		cfg.CSINodes = factory.Storage().V1().CSINodes()
		cfg.Nodes = factory.Core().V1().Nodes()
		cfg.Topology = &topology.Builder{Driver: driver, Nodes: cfg.Nodes.Lister(), CSINodes: cfg.CSINodes.Lister()}
	}
	ctrl, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range objs {
		var err error
		switch o := o.(type) {
		case *storagev1.StorageClass:
			err = cfg.Classes.Informer().GetIndexer().Add(o)
		case *storagev1.CSIStorageCapacity:
			err = cfg.Capacities.Informer().GetIndexer().Add(o)
		case *storagev1.CSINode:
			err = cfg.CSINodes.Informer().GetIndexer().Add(o)
		case *v1.Node:
			err = cfg.Nodes.Informer().GetIndexer().Add(o)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	return &fixture{client: client, csi: fcsi, ctrl: ctrl}
}

// syncAll runs a resync and every key it queues, as the workers would,
// without waiting for anything.
func (f *fixture) syncAll(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	f.ctrl.queue.Add(resyncKey)
	for i := 0; f.ctrl.queue.Len() > 0; i++ {
		if i > 1000 {
			t.Fatal("queue does not drain")
		}
		k, _ := f.ctrl.queue.Get()
		var err error
		if k == resyncKey {
			err = f.ctrl.resync(ctx)
		} else {
			err = f.ctrl.syncKey(ctx, k)
		}
		f.ctrl.queue.Done(k)
		if err != nil {
			t.Fatalf("sync %s: %v", k, err)
		}
	}
}

// objects lists what a user would see with kubectl, as
// "class zone capacity [max]" sorted; zone "-" is an empty nodeTopology
// (every node), "none" a missing one (no node).
func (f *fixture) objects(t *testing.T) []string {
	t.Helper()
	list, err := f.client.StorageV1().CSIStorageCapacities(ns).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, sc := range list.Items {
		z := "none"
		if sc.NodeTopology != nil {
			z = sc.NodeTopology.MatchLabels[zone]
			if z == "" {
				z = "-"
			}
		}
		s := fmt.Sprintf("%s %s %s", sc.StorageClassName, z, sc.Capacity)
		if sc.MaximumVolumeSize != nil {
			s += " max=" + sc.MaximumVolumeSize.String()
		}
		out = append(out, s)
	}
	slices.Sort(out)
	return out
}

// writes counts the verbs the controller sent for CSIStorageCapacities.
func (f *fixture) writes() map[string]int {
	out := map[string]int{}
	for _, a := range f.client.Actions() {
		if a.GetResource().Resource == "csistoragecapacities" && !strings.HasPrefix(a.GetVerb(), "list") && a.GetVerb() != "watch" {
			out[a.GetVerb()]++
		}
	}
	return out
}
