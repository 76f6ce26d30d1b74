// Package snapshotapi finds out whether the VolumeSnapshot API
// (snapshot.storage.k8s.io/v1) is served, and once it is, runs the
// VolumeSnapshot and VolumeSnapshotContent informers and hands out their
// listers. Until then every reader is told "not served" with what to do, so a
// claim restoring a snapshot on a cluster without the snapshot CRDs gets an
// Event instead of crashing the sidecar, and restores start working when the
// CRDs are installed, without a restart.
package snapshotapi

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	snapclientset "github.com/kubernetes-csi/external-snapshotter/client/v8/clientset/versioned"
	snapinformers "github.com/kubernetes-csi/external-snapshotter/client/v8/informers/externalversions"
	snapshotlisters "github.com/kubernetes-csi/external-snapshotter/client/v8/listers/volumesnapshot/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/discovery"
	"k8s.io/klog/v2"

	"github.com/crossns/external-provisioner/pkg/access"
)

const (
	// GroupVersion is the snapshot API version the sidecar reads.
	GroupVersion = "snapshot.storage.k8s.io/v1"
	// DefaultProbeInterval is how often discovery is asked again while the
	// API is not served: installing the CRDs takes effect within it.
	DefaultProbeInterval = 30 * time.Second
)

// resources are the resources of GroupVersion the informers list; the group
// version being served with only some of them (a half-installed set of CRDs)
// counts as not served, or the informers would fail to list.
var resources = []string{"volumesnapshots", "volumesnapshotcontents"}

var (
	// ErrNotServed is wrapped by Listers' error while the API is not served
	// (or discovery could not tell); the wrapping error says what to do.
	ErrNotServed = errors.New("the VolumeSnapshot API (" + GroupVersion + ") is not served")
	// ErrNotSynced is wrapped by Listers' error between the API being found
	// and its caches holding the first list: a short, transient state.
	ErrNotSynced = errors.New("the VolumeSnapshot caches have not synced yet")
)

// Watcher probes discovery for the snapshot API at start and then every
// probe interval until it is served; then it creates the informer factory,
// calls the OnAvailable callbacks, starts the factory and waits for its
// caches. Once available it stays so: when the CRDs are removed later, the
// informers retry (their caches keep the last objects) and recover when the
// CRDs come back.
type Watcher struct {
	// client lists and watches snapshots and contents.
	client snapclientset.Interface
	// discovery says whether GroupVersion is served; it must not cache, or
	// CRDs installed later are never seen.
	discovery discovery.DiscoveryInterface
	// resync is the informers' resync period.
	resync time.Duration
	// interval is the time between probes while the API is not served.
	interval time.Duration
	// logger is named by the caller.
	logger klog.Logger

	// mu guards the fields below it and serialises the callbacks with
	// starting the factory.
	mu sync.Mutex
	// factory is set once the API is served; it never changes afterwards.
	factory snapinformers.SharedInformerFactory
	// stop stops the factory's informers (the ctx of the Probe that made it).
	stop <-chan struct{}
	// callbacks wait for the factory; nil once it exists.
	callbacks []func(snapinformers.SharedInformerFactory)
	// notServed is why the API is not available, while factory is nil.
	notServed error

	// snapshots and contents are written once, before synced is set.
	snapshots snapshotlisters.VolumeSnapshotLister
	contents  snapshotlisters.VolumeSnapshotContentLister
	// synced is set once the caches hold the first list.
	synced atomic.Bool
	// decided is set once the first probe found the API not served, or the
	// caches synced: whoever waits for this Watcher can start then.
	decided atomic.Bool
	// logged is the last reason logged, so each is logged once (Probe's
	// goroutine only).
	logged string

	// access, when set, decides whether contents may be cached
	// (CheckContentsAccess); recheck is how often it is asked again.
	access  access.Checker
	recheck time.Duration
	// warnedAccess: the missing rule was logged (Run's goroutine only).
	warnedAccess bool
	// contentCallbacks wait for the content informer (guarded by mu).
	contentCallbacks []func(snapinformers.SharedInformerFactory)
	// contentsCached is set once the content informer is registered.
	contentsCached atomic.Bool
	// cachedContents and contentsSynced are the content informer's (mu).
	cachedContents snapshotlisters.VolumeSnapshotContentLister
	contentsSynced func() bool
}

// NewWatcher returns a Watcher that reads snapshots with client and asks
// discoveryClient whether they are served. Nothing happens until Run or Probe.
func NewWatcher(client snapclientset.Interface, discoveryClient discovery.DiscoveryInterface, resync time.Duration, logger klog.Logger) *Watcher {
	return &Watcher{
		client:    client,
		discovery: discoveryClient,
		resync:    resync,
		interval:  DefaultProbeInterval,
		recheck:   DefaultAccessRecheck,
		logger:    logger,
		notServed: fmt.Errorf("%w: the API server has not been asked yet", ErrNotServed),
	}
}

// OnAvailable registers fn to be called with the informer factory once the
// API is served. fn is called once: before the factory is started when
// registered before that, so event handlers it adds see every object as an
// add; at once (and the factory started again for informers fn asked for)
// when the API is available already. fn runs under the Watcher's lock: it
// must not call OnAvailable.
func (w *Watcher) OnAvailable(fn func(snapinformers.SharedInformerFactory)) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.factory == nil {
		w.callbacks = append(w.callbacks, fn)
		return
	}
	fn(w.factory)
	w.factory.Start(w.stop)
}

// Listers returns the VolumeSnapshot and VolumeSnapshotContent listers once
// their caches have synced. Before that the error wraps ErrNotServed (with
// what to do) or ErrNotSynced.
//
// The content lister reads from kube-apiserver (Get only) while RBAC does not
// allow caching contents (CheckContentsAccess).
func (w *Watcher) Listers() (snapshotlisters.VolumeSnapshotLister, snapshotlisters.VolumeSnapshotContentLister, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.synced.Load() {
		return w.snapshots, w.contents, nil
	}
	if w.factory != nil {
		return nil, nil, ErrNotSynced
	}
	return nil, nil, w.notServed
}

// HasSynced reports whether the Watcher has decided: the API was found not
// served at the first probe, or its caches have synced. Work that reads
// snapshots waits for it, so that a restore right after a start is not
// refused only because the caches were still empty.
func (w *Watcher) HasSynced() bool {
	return w.decided.Load()
}

// Run probes at once and then every probe interval until the API is served
// and its caches have synced, or ctx ends. The informers run until ctx ends.
// Call it once, in its own goroutine.
func (w *Watcher) Run(ctx context.Context) {
	w.logger.V(2).Info("Watching for the VolumeSnapshot API", "groupVersion", GroupVersion, "interval", w.interval)
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		if w.Probe(ctx) {
			if !w.contentsCached.Load() {
				w.recheckContents(ctx)
			}
			return
		}
		timer.Reset(w.interval)
	}
}

// Probe asks discovery once whether the API is served. When it is, and for
// the first time, Probe creates the informer factory, calls the OnAvailable
// callbacks, starts the informers (they run until ctx ends) and waits for
// their caches. It returns whether the API is available with synced caches;
// after that it asks nothing any more. Run calls it on a timer; tests call it
// directly.
func (w *Watcher) Probe(ctx context.Context) bool {
	if w.synced.Load() {
		return true
	}
	factory := w.factoryIfStarted()
	if factory == nil {
		served, err := w.served()
		if !served {
			w.setNotServed(err)
			return false
		}
		factory = w.start(ctx)
	}
	// A Probe cut short by ctx leaves the factory to the next one; its
	// informers stop with ctx anyway.
	for typ, ok := range factory.WaitForCacheSync(ctx.Done()) {
		if !ok {
			w.logger.V(2).Info("VolumeSnapshot caches did not sync", "type", typ.String(), "err", ctx.Err())
			return false
		}
	}
	w.synced.Store(true)
	w.decided.Store(true)
	w.logger.Info("The VolumeSnapshot API is served: restores from snapshots are enabled", "groupVersion", GroupVersion)
	return true
}

// served asks discovery whether GroupVersion is served with every resource
// the informers need. err is nil when discovery answered.
func (w *Watcher) served() (bool, error) {
	list, err := w.discovery.ServerResourcesForGroupVersion(GroupVersion)
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("discovering resources of %s: %w", GroupVersion, err)
	}
	for _, want := range resources {
		found := false
		for _, r := range list.APIResources {
			found = found || r.Name == want
		}
		if !found {
			return false, nil
		}
	}
	return true, nil
}

// setNotServed records why the API is not available; discoveryErr is nil
// when discovery said so. The first probe decides the Watcher.
func (w *Watcher) setNotServed(discoveryErr error) {
	var reason error
	if discoveryErr != nil {
		reason = fmt.Errorf("%w as far as csi-provisioner can tell: %w; discovery is asked again every %s", ErrNotServed, discoveryErr, w.interval)
	} else {
		reason = fmt.Errorf("%w: install the snapshot CRDs (volumesnapshots, volumesnapshotcontents and volumesnapshotclasses.snapshot.storage.k8s.io) "+
			"and the snapshot-controller; csi-provisioner notices them within %s, without a restart", ErrNotServed, w.interval)
	}
	w.mu.Lock()
	w.notServed = reason
	w.mu.Unlock()
	w.decided.Store(true)
	if reason.Error() == w.logged {
		w.logger.V(4).Info("The VolumeSnapshot API is still not served", "reason", reason.Error())
		return
	}
	w.logged = reason.Error()
	if discoveryErr != nil {
		w.logger.Error(discoveryErr, "Cannot tell whether the VolumeSnapshot API is served; restores from snapshots are refused until it is", "groupVersion", GroupVersion)
		return
	}
	w.logger.Info("The VolumeSnapshot API is not served; restores from snapshots are refused until its CRDs are installed", "groupVersion", GroupVersion)
}

// start creates the factory with both informers, hands it to the callbacks
// registered so far and starts it.
func (w *Watcher) start(ctx context.Context) snapinformers.SharedInformerFactory {
	cacheContents := w.mayCacheContents(ctx)
	w.mu.Lock()
	defer w.mu.Unlock()
	factory := snapinformers.NewSharedInformerFactory(w.client, w.resync)
	// Asking for the informers registers them, so Start runs them.
	w.snapshots = factory.Snapshot().V1().VolumeSnapshots().Lister()
	for _, fn := range w.callbacks {
		fn(factory)
	}
	w.callbacks = nil
	// Content callbacks run after the others: they extend what those set up.
	if cacheContents {
		w.registerContents(factory)
		w.contents = w.cachedContents
	} else {
		w.contents = directContents{client: w.client}
	}
	w.factory, w.stop = factory, ctx.Done()
	factory.Start(ctx.Done())
	w.logger.V(2).Info("Started VolumeSnapshot informers", "groupVersion", GroupVersion)
	return factory
}

func (w *Watcher) factoryIfStarted() snapinformers.SharedInformerFactory {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.factory
}
