// Package nodedeployment runs the sidecar beside a CSI driver on every node
// (--node-deployment), for drivers of node-local volumes, as upstream
// external-provisioner does: each instance knows its node from NODE_NAME and
// its driver's NodeGetInfo, provisions the claims whose selected node is its
// own, competes for Immediate claims by selecting its own node after a delay
// that grows with the times it lost (node.go), deletes only the volumes
// accessible from its node, and publishes capacity for its node alone.
package nodedeployment

import (
	"fmt"
	"hash/fnv"
	"maps"
	"slices"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	v1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	coreinformers "k8s.io/client-go/informers/core/v1"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	storagelisters "k8s.io/client-go/listers/storage/v1"
	"k8s.io/client-go/tools/cache"
)

// Config is what New needs; main fills it from the flags, NODE_NAME and
// the driver's NodeGetInfo.
type Config struct {
	// NodeName is the Kubernetes node the instance runs on (NODE_NAME).
	NodeName string
	// DriverName is the CSI driver's name.
	DriverName string
	// NodeInfo is the driver's NodeGetInfo answer: node ID and the
	// topology segment of the node (nil without topology).
	NodeInfo *csi.NodeGetInfoResponse
	// ImmediateBinding lets the instance compete for claims of classes with
	// Immediate binding (--node-deployment-immediate-binding).
	ImmediateBinding bool
	// BaseDelay and MaxDelay bound the wait before competing for a claim
	// (--node-deployment-base-delay, --node-deployment-max-delay).
	BaseDelay, MaxDelay time.Duration
	// Client writes the selected node into claims.
	Client kubernetes.Interface
	// Claims is the shared claim informer: the instance watches it for
	// another node winning a claim, and forgets deleted claims.
	Claims coreinformers.PersistentVolumeClaimInformer
	// Classes reads claims' classes.
	Classes storagelisters.StorageClassLister
}

// Node is one instance's view of its node.
type Node struct {
	cfg     Config
	node    *v1.Node
	csiNode *storagev1.CSINode
	// limiter spaces out the attempts of this instance to select its node
	// for a claim (node.go).
	limiter *jitterLimiter
}

// New returns the node of an instance and registers the claim informer
// handler that forgets deleted claims; call it before the informer starts.
func New(cfg Config) (*Node, error) {
	if cfg.NodeName == "" {
		return nil, fmt.Errorf("--node-deployment needs the env variable NODE_NAME (from fieldRef spec.nodeName)")
	}
	if cfg.NodeInfo == nil || cfg.NodeInfo.NodeId == "" {
		return nil, fmt.Errorf("the CSI driver's NodeGetInfo gave no node ID")
	}
	if cfg.Claims == nil || cfg.Client == nil {
		return nil, fmt.Errorf("node deployment needs the claim informer and a client")
	}
	if cfg.BaseDelay <= 0 || cfg.MaxDelay < cfg.BaseDelay {
		return nil, fmt.Errorf("--node-deployment-base-delay must be positive and at most --node-deployment-max-delay")
	}
	n := &Node{cfg: cfg, limiter: newJitterLimiter(cfg.BaseDelay, cfg.MaxDelay)}
	segment := n.Segment()
	n.node = &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: cfg.NodeName, Labels: segment}}
	driver := storagev1.CSINodeDriver{Name: cfg.DriverName, NodeID: cfg.NodeInfo.NodeId}
	for _, k := range slices.Sorted(maps.Keys(segment)) {
		driver.TopologyKeys = append(driver.TopologyKeys, k)
	}
	n.csiNode = &storagev1.CSINode{ObjectMeta: metav1.ObjectMeta{Name: cfg.NodeName}, Spec: storagev1.CSINodeSpec{Drivers: []storagev1.CSINodeDriver{driver}}}
	if _, err := cfg.Claims.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{DeleteFunc: n.claimDeleted}); err != nil {
		return nil, err
	}
	return n, nil
}

// Name is the node's name.
func (n *Node) Name() string { return n.cfg.NodeName }

// Segment is the node's topology segment as its driver reports it (a
// copy); nil without topology.
func (n *Node) Segment() map[string]string {
	if t := n.cfg.NodeInfo.GetAccessibleTopology(); t != nil && len(t.Segments) > 0 {
		return maps.Clone(t.Segments)
	}
	return nil
}

// Segments lists the one segment capacity is published for (the
// capacity.Segments of node mode): the node's own.
func (n *Node) Segments() ([]map[string]string, error) {
	return []map[string]string{n.Segment()}, nil
}

// Listers return a Node and a CSINode lister that hold only this node, made
// from NodeGetInfo, as upstream does: the instance never watches Nodes
// (every node's heartbeat would reach every instance) and provisions only
// for its own node.
func (n *Node) Listers() (corelisters.NodeLister, storagelisters.CSINodeLister) {
	nodes := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
	csiNodes := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
	_ = nodes.Add(n.node.DeepCopy())       // a fresh indexer takes any object with a name
	_ = csiNodes.Add(n.csiNode.DeepCopy()) // likewise
	return corelisters.NewNodeLister(nodes), storagelisters.NewCSINodeLister(csiNodes)
}

// ManagedBy is the csi.storage.k8s.io/managed-by label value of the
// CSIStorageCapacity objects this instance publishes, upstream's:
// "external-provisioner-<node>", shortened with a hash to fit a label value.
func (n *Node) ManagedBy(base string) string {
	return nameWithMaxLength(base, n.cfg.NodeName, validation.DNS1035LabelMaxLength)
}

// nameWithMaxLength joins base and suffix with a dash; when that is longer
// than limit, the base is shortened and the FNV-1a hash of the joined name put
// before the suffix (or, when the suffix alone is too long, after what fits
// of the base). Upstream names its objects this way; the same rule gives the
// same names, so objects either published are the other's.
func nameWithMaxLength(base, suffix string, limit int) string {
	name := suffix
	if base != "" {
		name = base + "-" + suffix
	}
	if len(name) <= limit {
		return name
	}
	keep := limit - 10 - len(suffix) // room for the base beside "-<8 hex>-"
	if keep > 0 {
		return base[:keep] + "-" + fnvHex(base) + "-" + suffix
	}
	short := fnvHex(name)
	if prefix := base[:min(len(base), max(0, limit-9))]; prefix != "" {
		short = prefix + "-" + short
	}
	return short[:min(limit, len(short))]
}

func fnvHex(s string) string {
	h := fnv.New32a()
	h.Write([]byte(s))
	return fmt.Sprintf("%08x", h.Sum32())
}
