// Package requeue puts waiting cross-namespace claims back into the
// provision loop the moment a ReferenceGrant change may have changed their
// decision, instead of leaving them to the loop's retry timer.
//
// The loop (sig-storage-lib-external-provisioner) keeps its queue private; it
// does take our shared claim informer. Informer wraps that informer and keeps
// the handler the loop registers, so calling the handler's OnUpdate with an
// unchanged claim enqueues it exactly as an API update would, with no write
// to the claim.
//
// Only claims a change can affect are requeued: a grant in prod that lets dev
// restore snapshot "a" wakes dev's waiting claims of prod/a and nobody else,
// because every requeued claim costs a provisioning attempt (a grant check,
// often an Event). Two indexes make that a lookup of exactly those claims.
package requeue

import (
	"fmt"
	"slices"
	"sync"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"

	"github.com/crossns/external-provisioner/pkg/datasource"
	"github.com/crossns/external-provisioner/pkg/referencegrant"
)

const (
	// SourceKindIndex indexes waiting claims whose data source is in
	// another namespace by sourceKey(source namespace, claim namespace, group,
	// kind, ""): the claims a grant's to entry without a name concerns.
	SourceKindIndex = "crossns.io/data-source-kind"
	// SourceNameIndex indexes the same claims by sourceKey(..., name): the
	// claims a to entry with a name concerns.
	SourceNameIndex = "crossns.io/data-source-name"
)

// sourceKey is the index key of claims in claimNS whose source is a
// group/kind object (named name, or any when name is "") in sourceNS. "/" can
// be in none of the parts (namespaces, kinds and the names of PVCs and
// snapshots are DNS labels or subdomains; groups are DNS subdomains), so keys
// do not collide.
func sourceKey(sourceNS, claimNS, group, kind, name string) string {
	key := sourceNS + "/" + claimNS + "/" + group + "/" + kind
	if name != "" {
		key += "/" + name
	}
	return key
}

// waitingSource returns the data source of a claim that waits to be
// provisioned from another namespace, if obj is one. Only waiting claims are
// indexed: the indexes are kept up to date on every claim event, so bound
// and deleted claims, which no grant change concerns any more, leave them
// rather than accumulate in the lookups.
func waitingSource(obj any) (*v1.PersistentVolumeClaim, datasource.Ref, bool) {
	claim, ok := obj.(*v1.PersistentVolumeClaim)
	if !ok || claim.Spec.VolumeName != "" || claim.Status.Phase != v1.ClaimPending || claim.DeletionTimestamp != nil {
		return nil, datasource.Ref{}, false
	}
	ref, ok := datasource.RefOf(claim)
	if !ok || !ref.Handled() || !ref.CrossNamespace(claim) {
		return nil, datasource.Ref{}, false
	}
	return claim, ref, true
}

// IndexBySourceKind is the indexer for SourceKindIndex.
func IndexBySourceKind(obj any) ([]string, error) {
	claim, ref, ok := waitingSource(obj)
	if !ok {
		return nil, nil
	}
	return []string{sourceKey(ref.Namespace, claim.Namespace, ref.Group, ref.Kind, "")}, nil
}

// IndexBySourceName is the indexer for SourceNameIndex.
func IndexBySourceName(obj any) ([]string, error) {
	claim, ref, ok := waitingSource(obj)
	if !ok {
		return nil, nil
	}
	return []string{sourceKey(ref.Namespace, claim.Namespace, ref.Group, ref.Kind, ref.Name)}, nil
}

// Informer is the claim informer handed to the provision loop.
type Informer struct {
	cache.SharedIndexInformer

	mu       sync.Mutex
	handlers []cache.ResourceEventHandler
}

// Wrap returns an Informer over a shared claim informer, with the source
// indexes added.
func Wrap(inf cache.SharedIndexInformer) (*Informer, error) {
	if err := inf.AddIndexers(cache.Indexers{SourceKindIndex: IndexBySourceKind, SourceNameIndex: IndexBySourceName}); err != nil {
		return nil, fmt.Errorf("adding claim indexes by cross-namespace data source: %w", err)
	}
	return &Informer{SharedIndexInformer: inf}, nil
}

// AddEventHandler registers h and keeps it for requeueing.
func (i *Informer) AddEventHandler(h cache.ResourceEventHandler) (cache.ResourceEventHandlerRegistration, error) {
	i.keep(h)
	return i.SharedIndexInformer.AddEventHandler(h)
}

// AddEventHandlerWithResyncPeriod registers h and keeps it for requeueing.
func (i *Informer) AddEventHandlerWithResyncPeriod(h cache.ResourceEventHandler, resync time.Duration) (cache.ResourceEventHandlerRegistration, error) {
	i.keep(h)
	return i.SharedIndexInformer.AddEventHandlerWithResyncPeriod(h, resync)
}

func (i *Informer) keep(h cache.ResourceEventHandler) {
	i.mu.Lock()
	defer i.mu.Unlock()
	i.handlers = append(i.handlers, h)
}

// Requeue hands each claim to the provision loop as an unchanged update, so
// it is tried again at once. Other deciders use it (pkg/sharing: a share-from
// claim waits on its source claim's annotation and state, not only on
// grants); the claims are theirs to choose.
func (i *Informer) Requeue(claims ...*v1.PersistentVolumeClaim) {
	i.mu.Lock()
	handlers := slices.Clone(i.handlers)
	i.mu.Unlock()
	for _, claim := range claims {
		for _, h := range handlers {
			h.OnUpdate(claim, claim)
		}
	}
}

// GrantsChanged requeues every waiting claim whose grant decision c may have
// changed: with c.All, every claim waiting for a source in another
// namespace; otherwise the claims in c's PersistentVolumeClaim from
// namespaces whose source is in c.Namespace and matches one of c.To. It
// returns how many claims it requeued. Its cost is that of the claims it
// requeues, however many other claims wait in the same namespaces.
func (i *Informer) GrantsChanged(c referencegrant.Change) int {
	i.mu.Lock()
	handlers := slices.Clone(i.handlers)
	i.mu.Unlock()
	idx := i.GetIndexer()
	n := 0
	requeue := func(index, key string) {
		objs, _ := idx.ByIndex(index, key)
		for _, o := range objs {
			claim := o.(*v1.PersistentVolumeClaim)
			for _, h := range handlers {
				h.OnUpdate(claim, claim)
			}
		}
		n += len(objs)
	}
	if c.All {
		for _, key := range idx.ListIndexFuncValues(SourceKindIndex) {
			requeue(SourceKindIndex, key)
		}
	} else {
		for _, from := range c.From {
			// Other referrers (a Gateway API route, say) share the grant
			// API but are not ours to retry.
			if from.Group != "" || from.Kind != datasource.ClaimKind {
				continue
			}
			for _, to := range c.To {
				index := SourceNameIndex
				if to.Name == "" {
					index = SourceKindIndex
				} else if slices.Contains(c.To, referencegrant.Target{Group: to.Group, Kind: to.Kind}) {
					// The entry for every name of the kind finds these
					// claims too; looking twice would requeue them twice.
					continue
				}
				requeue(index, sourceKey(c.Namespace, from.Namespace, to.Group, to.Kind, to.Name))
			}
		}
	}
	if n > 0 {
		klog.V(4).InfoS("Requeued waiting claims after a ReferenceGrant change", "change", c, "claims", n)
	}
	return n
}
