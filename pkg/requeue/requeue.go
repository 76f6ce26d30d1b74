// Package requeue puts waiting cross-namespace claims back into the
// provision loop the moment a ReferenceGrant in their source namespace
// changes, instead of leaving them to the loop's retry timer.
//
// The loop (sig-storage-lib-external-provisioner) keeps its queue private; it
// does take our shared claim informer. Informer wraps that informer and keeps
// the handler the loop registers, so calling the handler's OnUpdate with an
// unchanged claim enqueues it exactly as an API update would, with no write
// to the claim.
package requeue

import (
	"sync"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"

	"github.com/crossns/external-provisioner/pkg/datasource"
)

// SourceNamespaceIndex indexes claims whose data source is in another
// namespace by that namespace.
const SourceNamespaceIndex = "crossns.io/data-source-namespace"

// IndexBySourceNamespace is the indexer for SourceNamespaceIndex.
func IndexBySourceNamespace(obj any) ([]string, error) {
	claim, ok := obj.(*v1.PersistentVolumeClaim)
	if !ok {
		return nil, nil
	}
	ref, ok := datasource.RefOf(claim)
	if !ok || !ref.Handled() || !ref.CrossNamespace(claim) {
		return nil, nil
	}
	return []string{ref.Namespace}, nil
}

// Informer is the claim informer handed to the provision loop.
type Informer struct {
	cache.SharedIndexInformer

	mu       sync.Mutex
	handlers []cache.ResourceEventHandler
}

// Wrap returns an Informer over a shared claim informer, with the source
// namespace index added.
func Wrap(inf cache.SharedIndexInformer) (*Informer, error) {
	if err := inf.AddIndexers(cache.Indexers{SourceNamespaceIndex: IndexBySourceNamespace}); err != nil {
		return nil, err
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

// GrantsChanged requeues every waiting claim whose data source is in
// namespace ns ("" means every namespace, used when grants become readable).
// It returns how many claims it requeued.
func (i *Informer) GrantsChanged(ns string) int {
	idx := i.GetIndexer()
	var objs []any
	if ns == "" {
		for _, v := range idx.ListIndexFuncValues(SourceNamespaceIndex) {
			o, _ := idx.ByIndex(SourceNamespaceIndex, v)
			objs = append(objs, o...)
		}
	} else {
		objs, _ = idx.ByIndex(SourceNamespaceIndex, ns)
	}
	i.mu.Lock()
	handlers := append([]cache.ResourceEventHandler(nil), i.handlers...)
	i.mu.Unlock()
	n := 0
	for _, o := range objs {
		claim := o.(*v1.PersistentVolumeClaim)
		if claim.Spec.VolumeName != "" || claim.Status.Phase != v1.ClaimPending || claim.DeletionTimestamp != nil {
			continue
		}
		for _, h := range handlers {
			h.OnUpdate(claim, claim)
		}
		n++
	}
	if n > 0 {
		klog.V(4).InfoS("Requeued waiting claims after a ReferenceGrant change", "sourceNamespace", ns, "claims", n)
	}
	return n
}
