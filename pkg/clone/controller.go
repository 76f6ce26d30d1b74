// Package clone protects data sources while volumes are provisioned from
// them: a source PersistentVolumeClaim or VolumeSnapshot, in any namespace,
// carries a finalizer while any pending claim in any namespace names it, and
// loses it right after.
package clone

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	snapclientset "github.com/kubernetes-csi/external-snapshotter/client/v8/clientset/versioned"
	snapinformers "github.com/kubernetes-csi/external-snapshotter/client/v8/informers/externalversions/volumesnapshot/v1"
	snapshotlisters "github.com/kubernetes-csi/external-snapshotter/client/v8/listers/volumesnapshot/v1"
	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	coreinformers "k8s.io/client-go/informers/core/v1"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"

	"github.com/crossns/external-provisioner/pkg/datasource"
)

// Finalizer keeps a source from being deleted while a claim is provisioned
// from it. The name is the upstream sidecar's, so sources protected before a
// switch of image are released by this one.
const Finalizer = "provisioner.storage.kubernetes.io/cloning-protection"

// SourceIndex indexes claims by the source they name ("Kind/namespace/name"),
// across namespaces.
const SourceIndex = "crossns.io/data-source"

// SourceKey is the index key of a source.
func SourceKey(ref datasource.Ref) string { return ref.Kind + "/" + ref.Namespace + "/" + ref.Name }

// IndexBySource is the claim indexer for SourceIndex.
func IndexBySource(obj any) ([]string, error) {
	claim, ok := obj.(*v1.PersistentVolumeClaim)
	if !ok {
		return nil, nil
	}
	ref, ok := datasource.RefOf(claim)
	if !ok || !ref.Handled() {
		return nil, nil
	}
	return []string{SourceKey(ref)}, nil
}

// Controller adds the finalizer on demand (Protect) and removes it when no
// pending claim names the source any more.
type Controller struct {
	// client patches source claims; snapClient patches source snapshots.
	client     kubernetes.Interface
	snapClient snapclientset.Interface
	// claims reads claims from the shared informer; claimIndex finds the claims of a source.
	claims     corelisters.PersistentVolumeClaimLister
	claimIndex cache.Indexer
	// snapshots reads VolumeSnapshots; nil when the snapshot API is not served.
	snapshots snapshotlisters.VolumeSnapshotLister
	// queue holds source keys to re-examine.
	queue workqueue.TypedRateLimitingInterface[string]
	// synced reports informer caches filled.
	synced []cache.InformerSynced
	// locks serialises Protect and release per source key; protected holds
	// the UIDs of sources known to carry the finalizer; released the keys
	// whose finalizer this process removed (until it adds it again).
	locks, protected, released sync.Map
}

// New wires the controller to shared informers. snapshots may be nil.
func New(client kubernetes.Interface, snapClient snapclientset.Interface, claims coreinformers.PersistentVolumeClaimInformer, snapshots snapinformers.VolumeSnapshotInformer) (*Controller, error) {
	c := &Controller{
		client:     client,
		snapClient: snapClient,
		claims:     claims.Lister(),
		claimIndex: claims.Informer().GetIndexer(),
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "source-protection"}),
		synced: []cache.InformerSynced{claims.Informer().HasSynced},
	}
	if err := claims.Informer().AddIndexers(cache.Indexers{SourceIndex: IndexBySource}); err != nil {
		return nil, fmt.Errorf("adding claim source index: %w", err)
	}
	// Any change of a claim that names a source may release it (bound,
	// deleted, source changed); the old source too on update.
	_, err := claims.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: c.enqueueClaimSource,
		UpdateFunc: func(old, cur any) {
			c.enqueueClaimSource(old)
			c.enqueueClaimSource(cur)
			c.enqueueIfProtected(cur, datasource.ClaimKind)
			c.forgetRelease(cur, datasource.ClaimKind)
		},
		DeleteFunc: c.enqueueClaimSource,
	})
	if err != nil {
		return nil, fmt.Errorf("watching claims: %w", err)
	}
	if snapshots != nil {
		c.snapshots = snapshots.Lister()
		c.synced = append(c.synced, snapshots.Informer().HasSynced)
		_, err = snapshots.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc: func(obj any) { c.enqueueIfProtected(obj, datasource.SnapshotKind) },
			UpdateFunc: func(_, cur any) {
				c.enqueueIfProtected(cur, datasource.SnapshotKind)
				c.forgetRelease(cur, datasource.SnapshotKind)
			},
		})
		if err != nil {
			return nil, fmt.Errorf("watching snapshots: %w", err)
		}
	}
	return c, nil
}

func (c *Controller) enqueueClaimSource(obj any) {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	keys, _ := IndexBySource(obj)
	for _, k := range keys {
		c.queue.Add(k)
	}
}

// enqueueIfProtected looks at sources that carry the finalizer, so one left
// behind by a crash (or by the upstream sidecar) is released too.
func (c *Controller) enqueueIfProtected(obj any, kind string) {
	m, err := meta(obj)
	if err != nil || !slices.Contains(m.GetFinalizers(), Finalizer) {
		return
	}
	c.queue.Add(kind + "/" + m.GetNamespace() + "/" + m.GetName())
}

// forgetRelease drops the "released" mark once the cache shows the
// finalizer gone: from then on the cache is right again, and a finalizer
// added back by anyone is honoured.
func (c *Controller) forgetRelease(obj any, kind string) {
	m, err := meta(obj)
	if err != nil || slices.Contains(m.GetFinalizers(), Finalizer) {
		return
	}
	c.released.Delete(kind + "/" + m.GetNamespace() + "/" + m.GetName())
}

// Protect adds the finalizer to the source before CreateVolume. Many claims
// restoring one source arrive at once (fan-out): the first caller per source
// writes, the others find it protected and skip, so there is one write per
// source rather than a conflicting patch per claim.
func (c *Controller) Protect(ctx context.Context, _ *v1.PersistentVolumeClaim, src *datasource.Source) error {
	m, err := meta(src.Object)
	if err != nil {
		return err
	}
	key := SourceKey(src.Ref)
	lock := c.sourceLock(key)
	lock.Lock()
	defer lock.Unlock()
	if c.isProtected(key, m.GetUID()) {
		return nil
	}
	// A finalizer in the cache is trusted unless this process just removed
	// it (the cache may not show that yet).
	if _, released := c.released.Load(key); !released && slices.Contains(m.GetFinalizers(), Finalizer) {
		c.setProtected(key, m.GetUID())
		return nil
	}
	// The cached list may still hold the finalizer this process removed.
	fins := append(withoutFinalizer(m.GetFinalizers()), Finalizer)
	err = c.patchFinalizers(ctx, src.Kind, m.GetNamespace(), m.GetName(), m.GetResourceVersion(), fins)
	if apierrors.IsConflict(err) {
		// The cache was stale: read the source once and try again.
		var fresh metav1.Object
		if fresh, err = c.get(ctx, src.Kind, m.GetNamespace(), m.GetName()); err == nil && !slices.Contains(fresh.GetFinalizers(), Finalizer) {
			fins = append(slices.Clone(fresh.GetFinalizers()), Finalizer)
			err = c.patchFinalizers(ctx, src.Kind, fresh.GetNamespace(), fresh.GetName(), fresh.GetResourceVersion(), fins)
		}
	}
	if err != nil {
		return err
	}
	c.released.Delete(key)
	c.setProtected(key, m.GetUID())
	klog.FromContext(ctx).V(4).Info("Protected data source", "source", src.Ref.String())
	return nil
}

// sourceLock returns the mutex that serialises Protect per source.
func (c *Controller) sourceLock(key string) *sync.Mutex {
	l, _ := c.locks.LoadOrStore(key, &sync.Mutex{})
	return l.(*sync.Mutex)
}

// protected remembers sources this process added the finalizer to (by UID,
// so a re-created source is protected again) until sync releases them.
func (c *Controller) isProtected(key string, uid types.UID) bool {
	v, ok := c.protected.Load(key)
	return ok && v.(types.UID) == uid
}

func (c *Controller) setProtected(key string, uid types.UID) { c.protected.Store(key, uid) }

func (c *Controller) get(ctx context.Context, kind, ns, name string) (metav1.Object, error) {
	switch kind {
	case datasource.ClaimKind:
		return c.client.CoreV1().PersistentVolumeClaims(ns).Get(ctx, name, metav1.GetOptions{})
	case datasource.SnapshotKind:
		return c.snapClient.SnapshotV1().VolumeSnapshots(ns).Get(ctx, name, metav1.GetOptions{})
	}
	return nil, fmt.Errorf("unknown source kind %q", kind)
}

// Run processes the queue until ctx ends.
func (c *Controller) Run(ctx context.Context, workers int) {
	defer utilruntime.HandleCrash()
	defer c.queue.ShutDown()
	logger := klog.FromContext(ctx)
	if !cache.WaitForCacheSync(ctx.Done(), c.synced...) {
		return
	}
	logger.V(2).Info("Source protection controller started", "workers", workers)
	for range workers {
		go wait.UntilWithContext(ctx, c.worker, time.Second)
	}
	<-ctx.Done()
}

func (c *Controller) worker(ctx context.Context) {
	for c.processNext(ctx) {
	}
}

// processNext handles one key: Done always; Forget on success so backoff
// restarts; AddRateLimited on a transient error.
func (c *Controller) processNext(ctx context.Context) bool {
	key, quit := c.queue.Get()
	if quit {
		return false
	}
	defer c.queue.Done(key)
	if err := c.sync(ctx, key); err != nil {
		klog.FromContext(ctx).Error(err, "Releasing data source failed; will retry", "source", key)
		c.queue.AddRateLimited(key)
		return true
	}
	c.queue.Forget(key)
	return true
}

// sync removes the finalizer from a source no pending claim names.
func (c *Controller) sync(ctx context.Context, key string) error {
	kind, ns, name, err := splitKey(key)
	if err != nil {
		return nil // malformed keys never become valid
	}
	obj, err := c.source(kind, ns, name)
	if apierrors.IsNotFound(err) || obj == nil {
		return nil
	}
	if err != nil {
		return err
	}
	m, _ := meta(obj)
	if !slices.Contains(m.GetFinalizers(), Finalizer) {
		return nil
	}
	// Protect waits while a release is decided, so a claim arriving now is
	// either seen here as pending or adds the finalizer back afterwards.
	lock := c.sourceLock(key)
	lock.Lock()
	defer lock.Unlock()
	if _, ok := c.released.Load(key); ok {
		return nil // removed already; the cache has not caught up
	}
	users, err := c.claimIndex.ByIndex(SourceIndex, key)
	if err != nil {
		return fmt.Errorf("looking up claims of %s: %w", key, err)
	}
	for _, u := range users {
		claim := u.(*v1.PersistentVolumeClaim)
		if claim.Status.Phase == v1.ClaimPending && claim.DeletionTimestamp == nil {
			klog.FromContext(ctx).V(5).Info("Data source still in use", "source", key, "claim", klog.KObj(claim))
			return nil
		}
	}
	fins := withoutFinalizer(m.GetFinalizers())
	if err := c.patchFinalizers(ctx, kind, ns, name, m.GetResourceVersion(), fins); err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	c.protected.Delete(key)
	c.released.Store(key, struct{}{})
	klog.FromContext(ctx).V(4).Info("Released data source", "source", key)
	return nil
}

func (c *Controller) source(kind, ns, name string) (any, error) {
	switch kind {
	case datasource.ClaimKind:
		return c.claims.PersistentVolumeClaims(ns).Get(name)
	case datasource.SnapshotKind:
		if c.snapshots == nil {
			return nil, nil
		}
		return c.snapshots.VolumeSnapshots(ns).Get(name)
	}
	return nil, nil
}

// patchFinalizers writes the whole finalizer list guarded by the
// resourceVersion it was computed from, so a concurrent change is never lost
// (merge patches replace lists).
func (c *Controller) patchFinalizers(ctx context.Context, kind, ns, name, rv string, fins []string) error {
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"finalizers": fins, "resourceVersion": rv}})
	if err != nil {
		return err
	}
	switch kind {
	case datasource.ClaimKind:
		_, err = c.client.CoreV1().PersistentVolumeClaims(ns).Patch(ctx, name, types.MergePatchType, patch, metav1.PatchOptions{})
	case datasource.SnapshotKind:
		_, err = c.snapClient.SnapshotV1().VolumeSnapshots(ns).Patch(ctx, name, types.MergePatchType, patch, metav1.PatchOptions{})
	default:
		return fmt.Errorf("unknown source kind %q", kind)
	}
	if err != nil {
		return fmt.Errorf("updating finalizers of %s %s/%s: %w", kind, ns, name, err)
	}
	return nil
}

// withoutFinalizer returns a copy of fins without Finalizer.
func withoutFinalizer(fins []string) []string {
	return slices.DeleteFunc(slices.Clone(fins), func(f string) bool { return f == Finalizer })
}

func meta(obj any) (metav1.Object, error) {
	m, ok := obj.(metav1.Object)
	if !ok {
		return nil, fmt.Errorf("%T has no object metadata", obj)
	}
	return m, nil
}

func splitKey(key string) (kind, ns, name string, err error) {
	parts := strings.SplitN(key, "/", 3)
	if len(parts) != 3 {
		return "", "", "", fmt.Errorf("malformed source key %q", key)
	}
	return parts[0], parts[1], parts[2], nil
}
