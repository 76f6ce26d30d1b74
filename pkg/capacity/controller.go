// Package capacity publishes CSIStorageCapacity objects: for every
// StorageClass of the driver and every topology segment where the driver runs,
// the result of the driver's GetCapacity, so that the scheduler only picks
// nodes whose segment has room for a late-bound volume (--enable-capacity).
package capacity

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	v1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	coreinformers "k8s.io/client-go/informers/core/v1"
	storageinformers "k8s.io/client-go/informers/storage/v1"
	"k8s.io/client-go/kubernetes"
	storagelisters "k8s.io/client-go/listers/storage/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"
)

const (
	// DriverLabel names the driver that published an object. The label keys
	// and values are upstream external-provisioner's, so objects it published
	// are adopted when its image is swapped for this one.
	DriverLabel = "csi.storage.k8s.io/drivername"
	// ManagedByLabel marks objects published by a provisioner sidecar.
	ManagedByLabel = "csi.storage.k8s.io/managed-by"
	// ManagedByValue is ManagedByLabel's value for this sidecar.
	ManagedByValue = "external-provisioner"

	// byKeyIndex indexes published objects by class and segment.
	byKeyIndex = "classSegment"
)

// CSI is the part of the CSI controller service the publisher calls;
// csi.ControllerClient implements it.
type CSI interface {
	GetCapacity(ctx context.Context, req *csi.GetCapacityRequest, opts ...grpc.CallOption) (*csi.GetCapacityResponse, error)
}

// Segments lists the topology segments where the driver runs;
// *topology.Builder implements it.
type Segments interface {
	Segments() ([]map[string]string, error)
}

// Config is what New needs. Informers are registered on, not started.
type Config struct {
	// DriverName is the CSI driver's name, StorageClass.provisioner.
	DriverName string
	// Client writes CSIStorageCapacity objects.
	Client kubernetes.Interface
	// CSI answers GetCapacity.
	CSI CSI
	// Timeout bounds each GetCapacity call.
	Timeout time.Duration
	// Namespace is where objects are created (the sidecar's).
	Namespace string
	// Owner becomes every object's owner reference; nil leaves objects
	// without one (never garbage collected).
	Owner *metav1.OwnerReference
	// Topology lists segments; nil when the driver has no
	// VOLUME_ACCESSIBILITY_CONSTRAINTS: one object per class, with an empty
	// nodeTopology (every node).
	Topology Segments
	// ManagedBy is the ManagedByLabel value of the objects published and
	// looked after: ManagedByValue ("" means it), or in node mode the
	// node's own (nodedeployment.Node.ManagedBy), so that the instance of
	// each node publishes and deletes only its node's objects.
	ManagedBy string
	// ImmediateBinding also publishes for classes with Immediate binding.
	ImmediateBinding bool
	// PollInterval is how often every capacity is asked again.
	PollInterval time.Duration

	Classes    storageinformers.StorageClassInformer
	Capacities storageinformers.CSIStorageCapacityInformer // filtered by ListOptions
	// CSINodes and Nodes change the segments; nil without Topology, or
	// when its segments never change (a node's own in node mode).
	CSINodes storageinformers.CSINodeInformer
	Nodes    coreinformers.NodeInformer
}

// ListOptions filters the CSIStorageCapacity informer to this driver's
// objects published by a provisioner sidecar (managedBy, "" for
// ManagedByValue, as Config.ManagedBy).
func ListOptions(driver, managedBy string) func(*metav1.ListOptions) {
	if managedBy == "" {
		managedBy = ManagedByValue
	}
	return func(o *metav1.ListOptions) {
		o.LabelSelector = labels.Set{DriverLabel: driver, ManagedByLabel: managedBy}.String()
	}
}

// key is a unit of work: one class in one segment. The zero key asks for a
// full resync (class names are never empty).
type key struct {
	class   string
	segment string // segmentID of the segment; "" for no topology
}

var resyncKey = key{}

func (k key) String() string { return k.class + "/" + k.segment }

// Controller publishes CSIStorageCapacity objects.
type Controller struct {
	// cfg holds the driver, clients and options.
	cfg Config
	// classes reads StorageClasses from the cache.
	classes storagelisters.StorageClassLister
	// capacities holds published objects, indexed by byKeyIndex.
	capacities cache.Indexer
	// synced reports whether every informer the controller reads has synced.
	synced []cache.InformerSynced
	// queue holds keys to sync and resyncKey.
	queue workqueue.TypedRateLimitingInterface[key]

	// mu guards segments.
	mu sync.Mutex
	// segments maps segmentID to segment as of the last resync; nil before it.
	segments map[string]map[string]string
}

// New registers event handlers and indexes; call it before starting the
// informers.
func New(cfg Config) (*Controller, error) {
	if cfg.Namespace == "" {
		return nil, fmt.Errorf("no namespace to publish CSIStorageCapacity objects in")
	}
	if cfg.ManagedBy == "" {
		cfg.ManagedBy = ManagedByValue
	}
	c := &Controller{
		cfg:        cfg,
		classes:    cfg.Classes.Lister(),
		capacities: cfg.Capacities.Informer().GetIndexer(),
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[key](),
			workqueue.TypedRateLimitingQueueConfig[key]{Name: "csistoragecapacity"}),
	}
	if err := cfg.Capacities.Informer().AddIndexers(cache.Indexers{byKeyIndex: indexByKey}); err != nil {
		return nil, fmt.Errorf("indexing CSIStorageCapacity objects: %w", err)
	}
	resync := func() { c.queue.Add(resyncKey) }
	if _, err := cfg.Classes.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(any) { resync() },
		// Resyncs and no-op updates carry the same ResourceVersion: nothing
		// to do, the poll refreshes capacity anyway.
		UpdateFunc: func(o, n any) {
			if changed(o, n) {
				resync()
			}
		},
		DeleteFunc: func(any) { resync() },
	}); err != nil {
		return nil, err
	}
	if _, err := cfg.Capacities.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		// An object deleted by someone else is published again if still
		// wanted; adds and updates are ours or harmless.
		DeleteFunc: func(obj any) {
			if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = tomb.Obj
			}
			if sc, ok := obj.(*storagev1.CSIStorageCapacity); ok {
				c.queue.Add(keyOf(sc))
			}
		},
	}); err != nil {
		return nil, err
	}
	c.synced = []cache.InformerSynced{cfg.Classes.Informer().HasSynced, cfg.Capacities.Informer().HasSynced}
	if (cfg.CSINodes == nil) != (cfg.Nodes == nil) {
		return nil, fmt.Errorf("segments change with CSINodes and Nodes: give both informers or neither")
	}
	if cfg.Topology != nil && cfg.CSINodes != nil {
		// CSINodes change rarely; Nodes change every heartbeat, so only a
		// change of labels (where segment values live) counts.
		if _, err := cfg.CSINodes.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc:    func(any) { resync() },
			UpdateFunc: func(o, n any) { resync() },
			DeleteFunc: func(any) { resync() },
		}); err != nil {
			return nil, err
		}
		if _, err := cfg.Nodes.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc: func(any) { resync() },
			UpdateFunc: func(o, n any) {
				on, ok1 := o.(*v1.Node)
				nn, ok2 := n.(*v1.Node)
				if !ok1 || !ok2 || !maps.Equal(on.Labels, nn.Labels) {
					resync()
				}
			},
			DeleteFunc: func(any) { resync() },
		}); err != nil {
			return nil, err
		}
		c.synced = append(c.synced, cfg.CSINodes.Informer().HasSynced, cfg.Nodes.Informer().HasSynced)
	}
	return c, nil
}

func changed(o, n any) bool {
	om, err1 := metaOf(o)
	nm, err2 := metaOf(n)
	return err1 != nil || err2 != nil || om.GetResourceVersion() != nm.GetResourceVersion()
}

func metaOf(obj any) (metav1.Object, error) {
	m, ok := obj.(metav1.Object)
	if !ok {
		return nil, fmt.Errorf("%T is no object", obj)
	}
	return m, nil
}

// Run publishes until ctx is done, with workers keys synced at once.
func (c *Controller) Run(ctx context.Context, workers int) {
	defer utilruntime.HandleCrash()
	defer c.queue.ShutDown()
	logger := klog.FromContext(ctx).WithName("capacity")
	ctx = klog.NewContext(ctx, logger)
	logger.Info("Starting storage capacity publisher", "namespace", c.cfg.Namespace, "pollInterval", c.cfg.PollInterval, "workers", workers)
	if !cache.WaitForCacheSync(ctx.Done(), c.synced...) {
		return
	}
	// Each poll refreshes every class and segment.
	go wait.UntilWithContext(ctx, func(context.Context) { c.queue.Add(resyncKey) }, c.cfg.PollInterval)
	for range workers {
		go wait.UntilWithContext(ctx, func(ctx context.Context) {
			for c.processNextWorkItem(ctx) {
			}
		}, time.Second)
	}
	<-ctx.Done()
}

// processNextWorkItem syncs one key. Contract: Done always, so the key can be
// queued again; Forget on success, so its backoff resets; AddRateLimited on
// a transient error, so it is retried with growing delay.
func (c *Controller) processNextWorkItem(ctx context.Context) bool {
	k, quit := c.queue.Get()
	if quit {
		return false
	}
	defer c.queue.Done(k)
	var err error
	if k == resyncKey {
		err = c.resync(ctx)
	} else {
		err = c.syncKey(ctx, k)
	}
	if err != nil {
		klog.FromContext(ctx).Error(err, "Publishing storage capacity failed, will retry", "key", k.String())
		c.queue.AddRateLimited(k)
		return true
	}
	c.queue.Forget(k)
	return true
}

// segmentID is a stable name for a segment: sorted key=value pairs.
func segmentID(s map[string]string) string {
	var sb strings.Builder
	for _, k := range slices.Sorted(maps.Keys(s)) {
		sb.WriteString(k + "=" + s[k] + ";")
	}
	return sb.String()
}

// keyOf is the class and segment an object publishes: match labels are a
// segment, an empty selector (every node) is the segment of a driver without
// topology, as upstream publishes it too. An object whose nodeTopology is not
// of these forms (match expressions, or none: no node, as this sidecar
// published without topology before 0.1) gets a segment no resync produces,
// so it is deleted; nodeTopology is immutable, so a replacement is created.
func keyOf(sc *storagev1.CSIStorageCapacity) key {
	k := key{class: sc.StorageClassName}
	switch t := sc.NodeTopology; {
	case t == nil || len(t.MatchExpressions) > 0:
		k.segment = "foreign:" + sc.Name
	default:
		k.segment = segmentID(t.MatchLabels)
	}
	return k
}

func indexByKey(obj any) ([]string, error) {
	sc, ok := obj.(*storagev1.CSIStorageCapacity)
	if !ok {
		return nil, nil
	}
	return []string{keyOf(sc).String()}, nil
}
