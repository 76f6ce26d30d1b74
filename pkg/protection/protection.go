// Package protection keeps data sources, and the backend data behind them,
// from being deleted while volumes are provisioned from them.
//
// A source PersistentVolumeClaim or VolumeSnapshot, in any namespace, carries
// a finalizer while a claim that may use it now is pending: a claim of this
// driver, in the source's namespace or allowed by a ReferenceGrant (KEP-3294)
// — a namespace without a grant can never hold another's source. A source
// named by a recorded CreateVolume call that may still be running
// (pkg/inflight) is held too, so that call can be repeated and settled.
//
// A finalizer on a VolumeSnapshot does not keep its data: the stock
// snapshot-controller deletes the VolumeSnapshotContent (and csi-snapshotter
// the backend snapshot) regardless, after checking only claims in the
// snapshot's own namespace. So while a snapshot is in use its bound content is
// held at deletionPolicy Retain, the original policy recorded in an
// annotation; when the last use ends the policy is put back, and the content
// is deleted here when its VolumeSnapshot was deleted meanwhile. All state is
// in the objects, so a restart at any step resumes where it stopped.
package protection

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	snapclientset "github.com/kubernetes-csi/external-snapshotter/client/v8/clientset/versioned"
	snapinformers "github.com/kubernetes-csi/external-snapshotter/client/v8/informers/externalversions"
	snapshotlisters "github.com/kubernetes-csi/external-snapshotter/client/v8/listers/volumesnapshot/v1"
	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	coreinformers "k8s.io/client-go/informers/core/v1"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"

	"github.com/crossns/external-provisioner/pkg/datasource"
	"github.com/crossns/external-provisioner/pkg/keylock"
)

// The finalizers that keep a source from being deleted while a claim is
// provisioned from it. The names are upstream external-provisioner's
// (v6.1.1+), so sources it protected before a switch of image are released
// by this sidecar, and back.
const (
	// ClaimFinalizer is on a source PersistentVolumeClaim.
	ClaimFinalizer = "provisioner.storage.kubernetes.io/cloning-protection"
	// SnapshotFinalizer is on a source VolumeSnapshot. It is not
	// external-snapshotter's "snapshot.storage.kubernetes.io/volumesnapshot-as-source-protection".
	SnapshotFinalizer = "provisioner.storage.kubernetes.io/volumesnapshot-as-source-protection"
)

// FinalizerOf returns the finalizer of a source of kind (datasource.ClaimKind
// or datasource.SnapshotKind); "" for any other kind.
func FinalizerOf(kind string) string {
	switch kind {
	case datasource.ClaimKind:
		return ClaimFinalizer
	case datasource.SnapshotKind:
		return SnapshotFinalizer
	}
	return ""
}

// hasFinalizer reports whether m carries the finalizer of kind.
func hasFinalizer(m metav1.Object, kind string) bool {
	f := FinalizerOf(kind)
	return f != "" && slices.Contains(m.GetFinalizers(), f)
}

// SourceIndex indexes claims by the source they name (datasource.Ref.Key),
// across namespaces.
const SourceIndex = "crossns.io/data-source"

// SourceKey is the index key of a source.
func SourceKey(ref datasource.Ref) string { return ref.Key() }

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
	return []string{ref.Key()}, nil
}

// Authorizer decides a cross-namespace reference now (pkg/datasource).
type Authorizer interface {
	Authorize(claim *v1.PersistentVolumeClaim, ref datasource.Ref) (string, error)
}

// Records tells which sources recorded CreateVolume calls still need
// (pkg/inflight).
type Records interface {
	HoldsSource(key string) bool
}

// Config wires the controller.
type Config struct {
	// DriverName: only claims of this driver hold a source.
	DriverName string
	// Client patches source claims; SnapClient source snapshots and contents.
	Client     kubernetes.Interface
	SnapClient snapclientset.Interface
	// Claims is the shared claim informer (indexed by source here).
	Claims coreinformers.PersistentVolumeClaimInformer
	// Grants decides cross-namespace claims; nil: only same-namespace claims hold.
	Grants Authorizer
	// Records holds sources of calls in flight; nil: none.
	Records Records
	// Recorder tells a claim once when the content hold is not allowed.
	Recorder record.EventRecorder
	// SweepInterval is how often every VolumeSnapshot carrying
	// SnapshotFinalizer (and every held content) is looked at again, so a
	// finalizer whose last event was missed (a crash, a sidecar that was not
	// running) is released: upstream's --snapshot-orphan-sweep-interval.
	// 0 turns the sweep off; informer events and resyncs still release.
	SweepInterval time.Duration
}

// Controller adds protection on demand (Protect) and removes it when no
// claim that may use the source now is pending and no call needs it.
type Controller struct {
	cfg    Config
	claims corelisters.PersistentVolumeClaimLister
	// claimIndex finds the claims of a source.
	claimIndex cache.Indexer
	// snapshots holds the snapshot listers once the API is served.
	snapshots atomic.Pointer[snapshotCaches]
	// queue holds source keys to re-examine.
	queue  workqueue.TypedRateLimitingInterface[string]
	synced []cache.InformerSynced
	// locks serialises Protect and release per source key.
	locks keylock.Map[string]
	// mu guards protected and released. protected: source key → UID of the
	// object this process protected (fully: finalizer and content hold), until
	// released; released: keys whose finalizer this process removed, until the
	// cache shows it gone (or the object is deleted).
	mu        sync.Mutex
	protected map[string]types.UID
	released  map[string]struct{}
	// holdForbidden is set once RBAC refused a content hold (warned once).
	holdForbidden atomic.Bool
}

// snapshotCaches are replaced whole, never changed: contents and
// contentIndex are nil while contents are not cached.
type snapshotCaches struct {
	snapshots    snapshotlisters.VolumeSnapshotLister
	contents     snapshotlisters.VolumeSnapshotContentLister
	contentIndex cache.Indexer
	synced       []cache.InformerSynced
}

func (s *snapshotCaches) hasSynced() bool {
	for _, synced := range s.synced {
		if !synced() {
			return false
		}
	}
	return true
}

// New wires the controller to the shared claim informer. Snapshot sources
// are handled once SnapshotsAvailable is called.
func New(cfg Config) (*Controller, error) {
	c := &Controller{
		cfg:        cfg,
		claims:     cfg.Claims.Lister(),
		claimIndex: cfg.Claims.Informer().GetIndexer(),
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "source-protection"}),
		synced:    []cache.InformerSynced{cfg.Claims.Informer().HasSynced},
		protected: map[string]types.UID{},
		released:  map[string]struct{}{},
	}
	if err := cfg.Claims.Informer().AddIndexers(cache.Indexers{SourceIndex: IndexBySource}); err != nil {
		return nil, fmt.Errorf("adding claim source index: %w", err)
	}
	// Any change of a claim that names a source may release it (bound,
	// deleted, source changed); the old source too on update.
	_, err := cfg.Claims.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) {
			c.enqueueClaimSource(obj)
			c.enqueueIfProtected(obj, datasource.ClaimKind)
		},
		UpdateFunc: func(old, cur any) {
			c.enqueueClaimSource(old)
			c.enqueueClaimSource(cur)
			c.enqueueIfProtected(cur, datasource.ClaimKind)
			c.forgetRelease(cur, datasource.ClaimKind)
		},
		DeleteFunc: func(obj any) {
			c.enqueueClaimSource(obj)
			c.forget(obj, datasource.ClaimKind)
		},
	})
	if err != nil {
		return nil, fmt.Errorf("watching claims: %w", err)
	}
	return c, nil
}

// SnapshotsAvailable registers on the VolumeSnapshot informer; call it
// before the factory starts (snapshotapi.Watcher.OnAvailable does).
func (c *Controller) SnapshotsAvailable(f snapinformers.SharedInformerFactory) {
	snaps := f.Snapshot().V1().VolumeSnapshots()
	_, err := snaps.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) { c.enqueueIfProtected(obj, datasource.SnapshotKind) },
		UpdateFunc: func(_, cur any) {
			c.enqueueIfProtected(cur, datasource.SnapshotKind)
			c.forgetRelease(cur, datasource.SnapshotKind)
		},
		DeleteFunc: func(obj any) { c.forget(obj, datasource.SnapshotKind) },
	})
	if err != nil {
		utilruntimeError(err, "watching VolumeSnapshots")
	}
	c.snapshots.Store(&snapshotCaches{
		snapshots: snaps.Lister(),
		synced:    []cache.InformerSynced{snaps.Informer().HasSynced},
	})
}

// ContentsAvailable registers on the VolumeSnapshotContent informer once the
// sidecar may cache contents (snapshotapi.Watcher.OnContentsCached), after
// SnapshotsAvailable. Until then snapshot contents are not held: with
// upstream's ClusterRole (get and list on contents) nothing could be.
func (c *Controller) ContentsAvailable(f snapinformers.SharedInformerFactory) {
	contents := f.Snapshot().V1().VolumeSnapshotContents()
	if err := contents.Informer().AddIndexers(cache.Indexers{heldIndex: indexHeldBySnapshot}); err != nil {
		utilruntimeError(err, "indexing held VolumeSnapshotContents")
	}
	_, err := contents.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    c.enqueueIfHeld,
		UpdateFunc: func(_, cur any) { c.enqueueIfHeld(cur) },
	})
	if err != nil {
		utilruntimeError(err, "watching VolumeSnapshotContents")
	}
	prev := c.snapshots.Load()
	if prev == nil {
		utilruntimeError(fmt.Errorf("contents before snapshots"), "wiring VolumeSnapshotContents")
		return
	}
	c.snapshots.Store(&snapshotCaches{
		snapshots: prev.snapshots, contents: contents.Lister(), contentIndex: contents.Informer().GetIndexer(),
		synced: append(slices.Clone(prev.synced), contents.Informer().HasSynced),
	})
}

func utilruntimeError(err error, what string) {
	klog.Background().Error(err, "Source protection: "+what)
}

// GrantsChanged re-examines the protected sources of a namespace ("" = all):
// a revoked grant may leave nothing that may use them.
func (c *Controller) GrantsChanged(ns string) {
	c.mu.Lock()
	var keys []string
	for k := range c.protected {
		if _, kns, _, err := splitKey(k); err == nil && (ns == "" || kns == ns) {
			keys = append(keys, k)
		}
	}
	c.mu.Unlock()
	for _, k := range keys {
		c.queue.Add(k)
	}
}

// RecordRemoved re-examines the source a settled call held.
func (c *Controller) RecordRemoved(source string) {
	if source != "" {
		c.queue.Add(source)
	}
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
	if err != nil || !hasFinalizer(m, kind) {
		return
	}
	c.queue.Add(kind + "/" + m.GetNamespace() + "/" + m.GetName())
}

// forgetRelease drops the "released" mark once the cache shows the
// finalizer gone: from then on the cache is right again, and a finalizer
// added back by anyone is honoured.
func (c *Controller) forgetRelease(obj any, kind string) {
	m, err := meta(obj)
	if err != nil || hasFinalizer(m, kind) {
		return
	}
	c.mu.Lock()
	delete(c.released, kind+"/"+m.GetNamespace()+"/"+m.GetName())
	c.mu.Unlock()
}

// forget drops all memory of a deleted source, so the maps stay as small as
// the set of sources in use.
func (c *Controller) forget(obj any, kind string) {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	m, err := meta(obj)
	if err != nil {
		return
	}
	key := kind + "/" + m.GetNamespace() + "/" + m.GetName()
	c.mu.Lock()
	delete(c.released, key)
	if uid, ok := c.protected[key]; ok && uid == m.GetUID() {
		delete(c.protected, key)
	}
	c.mu.Unlock()
	// A held content may outlive its snapshot: look at it once more.
	c.queue.Add(key)
}

// Holds reports whether protection holds source (the finalizer is on it):
// a source being deleted stays usable by claims already waiting on it.
func (c *Controller) Holds(source metav1.Object) bool {
	if _, ok := source.(*v1.PersistentVolumeClaim); ok {
		return hasFinalizer(source, datasource.ClaimKind)
	}
	return hasFinalizer(source, datasource.SnapshotKind)
}

// Protect protects the source of claim before CreateVolume: the finalizer,
// and for a snapshot the hold on its content. Many claims restoring one
// source arrive at once (fan-out): the first caller per source writes, the
// others find it protected and skip, so there is one write per source rather
// than a conflicting patch per claim.
func (c *Controller) Protect(ctx context.Context, claim *v1.PersistentVolumeClaim, src *datasource.Source) error {
	m, err := meta(src.Object)
	if err != nil {
		return err
	}
	key := src.Ref.Key()
	defer c.locks.Lock(key)()
	if c.isProtected(key, m.GetUID()) {
		return nil
	}
	// No finalizer can be added to an object being deleted. The resolver
	// lets a claim use such a source only while a finalizer holds it: ours,
	// or the stock snapshot-controller's for a restore of its namespace.
	if m.GetDeletionTimestamp() == nil || hasFinalizer(m, src.Kind) {
		if err := c.addFinalizer(ctx, src.Kind, key, m); err != nil {
			return err
		}
	}
	if src.IsSnapshot() {
		if err := c.holdContent(ctx, claim, src); err != nil {
			return err
		}
	}
	c.mu.Lock()
	delete(c.released, key)
	c.protected[key] = m.GetUID()
	c.mu.Unlock()
	klog.FromContext(ctx).V(4).Info("Protected data source", "source", src.Ref.String())
	return nil
}

// addFinalizer adds the kind's finalizer unless the cache shows it (and this
// process did not just remove it: the cache may not show that yet).
func (c *Controller) addFinalizer(ctx context.Context, kind, key string, m metav1.Object) error {
	c.mu.Lock()
	_, released := c.released[key]
	c.mu.Unlock()
	if !released && hasFinalizer(m, kind) {
		return nil
	}
	// The cached list may still hold the finalizer this process removed.
	fin := FinalizerOf(kind)
	err := c.writeFinalizers(ctx, kind, m, append(without(m.GetFinalizers(), fin), fin))
	if apierrors.IsConflict(err) {
		// The cache was stale: read the source once and try again.
		var fresh metav1.Object
		if fresh, err = c.get(ctx, kind, m.GetNamespace(), m.GetName()); err == nil && !hasFinalizer(fresh, kind) {
			err = c.writeFinalizers(ctx, kind, fresh, append(slices.Clone(fresh.GetFinalizers()), fin))
		}
	}
	return err
}

func (c *Controller) isProtected(key string, uid types.UID) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	v, ok := c.protected[key]
	return ok && v == uid
}

func (c *Controller) get(ctx context.Context, kind, ns, name string) (metav1.Object, error) {
	switch kind {
	case datasource.ClaimKind:
		return c.cfg.Client.CoreV1().PersistentVolumeClaims(ns).Get(ctx, name, metav1.GetOptions{})
	case datasource.SnapshotKind:
		return c.cfg.SnapClient.SnapshotV1().VolumeSnapshots(ns).Get(ctx, name, metav1.GetOptions{})
	}
	return nil, fmt.Errorf("unknown source kind %q", kind)
}

// Run processes the queue until ctx ends.
func (c *Controller) Run(ctx context.Context, workers int) {
	defer c.queue.ShutDown()
	logger := klog.FromContext(ctx)
	if !cache.WaitForCacheSync(ctx.Done(), c.synced...) {
		return
	}
	logger.V(2).Info("Source protection controller started", "workers", workers, "sweepInterval", c.cfg.SweepInterval)
	for range workers {
		go func() {
			for c.processNext(ctx) {
			}
		}()
	}
	if c.cfg.SweepInterval > 0 {
		go wait.UntilWithContext(ctx, func(ctx context.Context) { c.Sweep(ctx) }, c.cfg.SweepInterval)
	}
	<-ctx.Done()
}

// Sweep queues every VolumeSnapshot in the cache that carries
// SnapshotFinalizer or has a held content, for sync to release what nothing
// uses any more. It returns how many were queued (0 while the snapshot API
// is not served).
func (c *Controller) Sweep(ctx context.Context) int {
	caches := c.snapshots.Load()
	if caches == nil || !caches.hasSynced() {
		return 0
	}
	snaps, err := caches.snapshots.List(labels.Everything())
	if err != nil {
		klog.FromContext(ctx).Error(err, "Sweeping VolumeSnapshots for orphaned finalizers")
		return 0
	}
	keys := map[string]struct{}{}
	for _, s := range snaps {
		if hasFinalizer(s, datasource.SnapshotKind) {
			keys[datasource.SnapshotKind+"/"+s.Namespace+"/"+s.Name] = struct{}{}
		}
	}
	if caches.contentIndex != nil {
		for _, k := range caches.contentIndex.ListIndexFuncValues(heldIndex) {
			keys[datasource.SnapshotKind+"/"+k] = struct{}{}
		}
	}
	for k := range keys {
		c.queue.Add(k)
	}
	klog.FromContext(ctx).V(4).Info("Swept VolumeSnapshots for orphaned finalizers", "queued", len(keys))
	return len(keys)
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

// without returns a copy of fins without fin.
func without(fins []string, fin string) []string {
	return slices.DeleteFunc(slices.Clone(fins), func(f string) bool { return f == fin })
}

func meta(obj any) (metav1.Object, error) {
	m, ok := obj.(metav1.Object)
	if !ok {
		return nil, fmt.Errorf("%T has no object metadata", obj)
	}
	return m, nil
}
