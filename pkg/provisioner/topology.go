package provisioner

import (
	"fmt"
	"sync"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/protobuf/proto"
	v1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/crossns/external-provisioner/pkg/topology"
)

// maxRememberedTopologies bounds the requirements kept for claims still
// being provisioned. Past it, entries of claims that are gone go first, then
// the oldest: a forgotten entry costs one more computation, never a wrong
// call (a call in flight is repeated from its record, see requirements).
const maxRememberedTopologies = 4096

// requirements returns the accessibility requirements of a claim's
// CreateVolume. A claim keeps the requirements it was first given until its
// provisioning ends, so that every retry asks the driver for the same thing:
//
//   - a call recorded in flight is repeated with the requirements it was made
//     with, even when the selected node, its CSINode or its labels are gone
//     or changed meanwhile (CSI idempotency: one name, one request; the volume
//     goes where the first call put it, and its PV's node affinity says so);
//   - otherwise the requirements computed for the same selected node are
//     reused; a different node (the scheduler picked again) computes anew.
//
// Only successful computations are kept, so a node whose labels were
// incomplete is read again on the next attempt. A missing Node or CSINode of
// the selected node gives the claim back to the scheduler (reschedule).
func (p *Provisioner) requirements(claim *v1.PersistentVolumeClaim, class *storagev1.StorageClass, selected *v1.Node) (*csi.TopologyRequirement, error) {
	if p.Topology == nil || !p.PluginCaps[csi.PluginCapability_Service_VOLUME_ACCESSIBILITY_CONSTRAINTS] {
		return nil, nil
	}
	if r, ok := p.Records.Get(claim.UID); ok && r.Request != nil {
		return cloneRequirement(r.Request.AccessibilityRequirements), nil
	}
	node := ""
	if selected != nil {
		node = selected.Name
	}
	if req, ok := p.topologies.get(claim.UID, node); ok {
		return req, nil
	}
	req, err := p.Topology.Requirements(class, selected, claim.Name)
	if err != nil {
		if selected != nil && topology.IsNodeMissing(err) {
			return nil, fail(reschedule, fmt.Errorf("topology: %w; the claim goes back to the scheduler to pick a node again", err))
		}
		return nil, fail(invalid, fmt.Errorf("topology: %w", err))
	}
	p.topologies.put(claim, node, req, p.claimGone)
	return req, nil
}

// topologyMemo keeps the requirements computed for claims whose provisioning
// has not ended. It hands out and keeps copies only, so nothing a caller does
// with a request changes what the next retry sends (upstream 6.1.1 fixed
// exactly such sharing: a retry reordered the remembered segments).
type topologyMemo struct {
	mu      sync.Mutex
	entries map[types.UID]*memoEntry
	// max bounds entries; 0 means maxRememberedTopologies.
	max int
}

type memoEntry struct {
	claim *v1.PersistentVolumeClaim // namespace, name and UID only
	node  string
	req   *csi.TopologyRequirement
	added time.Time
}

// get returns a copy of the claim's requirements for the node.
func (m *topologyMemo) get(uid types.UID, node string) (*csi.TopologyRequirement, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.entries[uid]
	if !ok || e.node != node {
		return nil, false
	}
	return cloneRequirement(e.req), true
}

// put remembers a copy of req for the claim on node, replacing what the claim
// had. When the memo is full it first drops claims gone reports gone, then
// the oldest entries.
func (m *topologyMemo) put(claim *v1.PersistentVolumeClaim, node string, req *csi.TopologyRequirement, gone func(*v1.PersistentVolumeClaim) bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.entries == nil {
		m.entries = map[types.UID]*memoEntry{}
	}
	limit := m.max
	if limit <= 0 {
		limit = maxRememberedTopologies
	}
	if _, ok := m.entries[claim.UID]; !ok && len(m.entries) >= limit {
		m.evictLocked(limit, gone)
	}
	key := &v1.PersistentVolumeClaim{}
	key.Namespace, key.Name, key.UID = claim.Namespace, claim.Name, claim.UID
	m.entries[claim.UID] = &memoEntry{claim: key, node: node, req: cloneRequirement(req), added: time.Now()}
}

// evictLocked makes room for one entry.
func (m *topologyMemo) evictLocked(limit int, gone func(*v1.PersistentVolumeClaim) bool) {
	for uid, e := range m.entries {
		if gone(e.claim) {
			delete(m.entries, uid)
		}
	}
	for len(m.entries) >= limit {
		var oldest types.UID
		var at time.Time
		for uid, e := range m.entries {
			if at.IsZero() || e.added.Before(at) {
				oldest, at = uid, e.added
			}
		}
		delete(m.entries, oldest)
	}
}

// forget drops the claim's requirements: its provisioning ended (PV made,
// final failure, rescheduled, claim deleted).
func (m *topologyMemo) forget(uid types.UID) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.entries, uid)
}

// len is the number of claims remembered (tests).
func (m *topologyMemo) len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.entries)
}

func cloneRequirement(r *csi.TopologyRequirement) *csi.TopologyRequirement {
	if r == nil {
		return nil
	}
	return proto.Clone(r).(*csi.TopologyRequirement)
}
