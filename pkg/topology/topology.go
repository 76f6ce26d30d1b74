// Package topology builds CSI accessibility requirements for CreateVolume from
// the StorageClass's allowedTopologies, the node the scheduler selected, and
// the topology keys drivers publish in CSINode, and turns the topology a
// driver returns into PV node affinity.
package topology

import (
	"errors"
	"fmt"
	"hash/fnv"
	"maps"
	"slices"
	"sort"
	"strings"

	"github.com/container-storage-interface/spec/lib/go/csi"
	v1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/labels"
	corelisters "k8s.io/client-go/listers/core/v1"
	storagelisters "k8s.io/client-go/listers/storage/v1"
)

// Builder computes accessibility requirements. It reads only caches.
type Builder struct {
	// Driver is the CSI driver name, as in CSINode.spec.drivers[].name.
	Driver string
	// Strict: with a selected node, require exactly that node's segment
	// (--strict-topology).
	Strict bool
	// Immediate: without a selected node and allowedTopologies, require any
	// segment where the driver runs (--immediate-topology).
	Immediate bool
	Nodes     corelisters.NodeLister
	CSINodes  storagelisters.CSINodeLister
}

// NodeMissingError says that the node the scheduler selected has no Node or
// no CSINode object: it was deleted, or the driver's node plugin has not
// registered there. Another node may do, so callers give the claim back to
// the scheduler rather than fail it.
type NodeMissingError struct {
	// Node is the selected node's name.
	Node string
	// Kind is the missing object's kind: "Node" or "CSINode".
	Kind string
}

func (e *NodeMissingError) Error() string {
	if e.Kind == "CSINode" {
		return fmt.Sprintf("CSINode %q does not exist: the driver's node plugin has not registered on the selected node", e.Node)
	}
	return fmt.Sprintf("%s %q does not exist: the selected node was deleted", e.Kind, e.Node)
}

// IsNodeMissing reports whether err says the selected node's Node or CSINode
// is missing.
func IsNodeMissing(err error) bool {
	var nm *NodeMissingError
	return errors.As(err, &nm)
}

// Requirements returns nil when nothing constrains where the volume goes.
func (b *Builder) Requirements(class *storagev1.StorageClass, selected *v1.Node, claimName string) (*csi.TopologyRequirement, error) {
	allowed := flattenAllowed(class.AllowedTopologies)
	if selected != nil {
		return b.forSelectedNode(selected, allowed)
	}
	if len(allowed) > 0 {
		return &csi.TopologyRequirement{Requisite: toCSI(allowed), Preferred: toCSI(rotate(allowed, claimName))}, nil
	}
	if !b.Immediate {
		return nil, nil
	}
	segments, err := b.driverSegments(nil)
	if err != nil || len(segments) == 0 {
		return nil, err
	}
	return &csi.TopologyRequirement{Requisite: toCSI(segments), Preferred: toCSI(rotate(segments, claimName))}, nil
}

func (b *Builder) forSelectedNode(selected *v1.Node, allowed []map[string]string) (*csi.TopologyRequirement, error) {
	// The cache's copy, not the one handed over: it may be newer (labels),
	// or gone (the node was deleted since the scheduler picked it).
	node, err := b.Nodes.Get(selected.Name)
	if apierrors.IsNotFound(err) {
		return nil, &NodeMissingError{Node: selected.Name, Kind: "Node"}
	}
	if err != nil {
		return nil, fmt.Errorf("reading Node %q: %w", selected.Name, err)
	}
	keys, err := b.topologyKeys(node.Name)
	if err != nil {
		return nil, err
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("driver %q publishes no topology keys on node %q (CSINode); is the driver's node plugin running there?", b.Driver, node.Name)
	}
	own := make(map[string]string, len(keys))
	for _, k := range keys {
		v, ok := node.Labels[k]
		if !ok {
			return nil, fmt.Errorf("node %q has no label %q that driver %q reports as a topology key", node.Name, k, b.Driver)
		}
		own[k] = v
	}
	if len(allowed) > 0 && !slices.ContainsFunc(allowed, func(a map[string]string) bool { return subset(a, own) }) {
		return nil, fmt.Errorf("selected node %q is outside the StorageClass's allowedTopologies", node.Name)
	}
	if b.Strict {
		seg := []map[string]string{own}
		return &csi.TopologyRequirement{Requisite: toCSI(seg), Preferred: toCSI(seg)}, nil
	}
	var requisite []map[string]string
	if len(allowed) > 0 {
		requisite = allowed
	} else if requisite, err = b.driverSegments(keys); err != nil {
		return nil, err
	}
	// The selected node's segment goes first in preferred: that is where the
	// pod will run.
	preferred := []map[string]string{own}
	for _, s := range requisite {
		if !maps.Equal(s, own) {
			preferred = append(preferred, s)
		}
	}
	if !slices.ContainsFunc(requisite, func(s map[string]string) bool { return maps.Equal(s, own) }) {
		requisite = append([]map[string]string{own}, requisite...)
	}
	return &csi.TopologyRequirement{Requisite: toCSI(requisite), Preferred: toCSI(preferred)}, nil
}

// Segments lists the distinct topology segments of all nodes where the
// driver runs (CSINode topology keys with the Node's values), sorted. Storage
// capacity is published once per segment.
func (b *Builder) Segments() ([]map[string]string, error) {
	return b.driverSegments(nil)
}

// topologyKeys are the keys the driver reports on a node's CSINode.
func (b *Builder) topologyKeys(node string) ([]string, error) {
	cn, err := b.CSINodes.Get(node)
	if apierrors.IsNotFound(err) {
		return nil, &NodeMissingError{Node: node, Kind: "CSINode"}
	}
	if err != nil {
		return nil, fmt.Errorf("reading CSINode %q: %w", node, err)
	}
	for _, d := range cn.Spec.Drivers {
		if d.Name == b.Driver {
			return d.TopologyKeys, nil
		}
	}
	return nil, nil
}

// driverSegments lists the distinct segments of all nodes where the driver
// runs. With keys set, only nodes with exactly those keys count, so segments
// stay comparable.
func (b *Builder) driverSegments(keys []string) ([]map[string]string, error) {
	csiNodes, err := b.CSINodes.List(labels.Everything())
	if err != nil {
		return nil, fmt.Errorf("listing CSINodes: %w", err)
	}
	seen := map[string]bool{}
	var out []map[string]string
	for _, cn := range csiNodes {
		var nodeKeys []string
		for _, d := range cn.Spec.Drivers {
			if d.Name == b.Driver {
				nodeKeys = d.TopologyKeys
			}
		}
		if len(nodeKeys) == 0 || (keys != nil && !sameKeys(keys, nodeKeys)) {
			continue
		}
		node, err := b.Nodes.Get(cn.Name)
		if err != nil {
			continue // CSINode of a node being removed
		}
		seg := map[string]string{}
		for _, k := range nodeKeys {
			if v, ok := node.Labels[k]; ok {
				seg[k] = v
			}
		}
		if len(seg) != len(nodeKeys) {
			continue
		}
		if id := segmentID(seg); !seen[id] {
			seen[id] = true
			out = append(out, seg)
		}
	}
	sort.Slice(out, func(i, j int) bool { return segmentID(out[i]) < segmentID(out[j]) })
	return out, nil
}

// flattenAllowed turns allowedTopologies terms into the segments they allow:
// a term with several values per key allows their cartesian product.
func flattenAllowed(terms []v1.TopologySelectorTerm) []map[string]string {
	var out []map[string]string
	seen := map[string]bool{}
	for _, term := range terms {
		segs := []map[string]string{{}}
		for _, expr := range term.MatchLabelExpressions {
			var next []map[string]string
			for _, s := range segs {
				for _, v := range expr.Values {
					n := maps.Clone(s)
					n[expr.Key] = v
					next = append(next, n)
				}
			}
			segs = next
		}
		for _, s := range segs {
			if id := segmentID(s); len(s) > 0 && !seen[id] {
				seen[id] = true
				out = append(out, s)
			}
		}
	}
	return out
}

// rotate orders segments starting at a position derived from the claim name,
// so claims spread over segments instead of all preferring the first.
func rotate(segs []map[string]string, claimName string) []map[string]string {
	if len(segs) < 2 {
		return segs
	}
	h := fnv.New32a()
	h.Write([]byte(claimName))
	i := int(h.Sum32() % uint32(len(segs)))
	return append(slices.Clone(segs[i:]), segs[:i]...)
}

func toCSI(segs []map[string]string) []*csi.Topology {
	out := make([]*csi.Topology, 0, len(segs))
	for _, s := range segs {
		out = append(out, &csi.Topology{Segments: maps.Clone(s)})
	}
	return out
}

func subset(a, b map[string]string) bool {
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func sameKeys(a, b []string) bool {
	return len(a) == len(b) && subsetKeys(a, b)
}

func subsetKeys(a, b []string) bool {
	for _, k := range a {
		if !slices.Contains(b, k) {
			return false
		}
	}
	return true
}

func segmentID(s map[string]string) string {
	keys := slices.Sorted(maps.Keys(s))
	var sb strings.Builder
	for _, k := range keys {
		sb.WriteString(k + "=" + s[k] + ";")
	}
	return sb.String()
}

// NodeAffinity turns the topology a driver returned into PV node affinity:
// the volume is reachable from nodes in any of the segments.
func NodeAffinity(accessible []*csi.Topology) *v1.VolumeNodeAffinity {
	var terms []v1.NodeSelectorTerm
	for _, t := range accessible {
		if len(t.GetSegments()) == 0 {
			continue
		}
		var exprs []v1.NodeSelectorRequirement
		for _, k := range slices.Sorted(maps.Keys(t.Segments)) {
			exprs = append(exprs, v1.NodeSelectorRequirement{Key: k, Operator: v1.NodeSelectorOpIn, Values: []string{t.Segments[k]}})
		}
		terms = append(terms, v1.NodeSelectorTerm{MatchExpressions: exprs})
	}
	if len(terms) == 0 {
		return nil
	}
	return &v1.VolumeNodeAffinity{Required: &v1.NodeSelector{NodeSelectorTerms: terms}}
}
