package referencegrant

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"
	gatewayclientset "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"
	gatewayinformersv1 "sigs.k8s.io/gateway-api/pkg/client/informers/externalversions/apis/v1"
	gatewayinformersv1beta1 "sigs.k8s.io/gateway-api/pkg/client/informers/externalversions/apis/v1beta1"
)

const (
	// defaultMinProbe is how soon discovery is asked again after the grant
	// API was found missing, or after an informer was stopped because
	// listing was refused. Short, so that installing the CRD or fixing
	// RBAC takes effect without a restart.
	defaultMinProbe = 10 * time.Second
	// defaultMaxProbe caps the backoff between retries while unavailable,
	// and is the interval of the discovery check that notices a version
	// change or a removed CRD while available.
	defaultMaxProbe = time.Minute
)

// Watcher finds out which version of the ReferenceGrant API the API server
// serves, runs an informer for it and feeds an Index, and keeps doing so as
// the CRD is installed, upgraded or removed and as RBAC changes, without a
// restart and without ever blocking its callers: until grants can be read,
// Check returns ErrUnavailable with the reason.
//
// The informer is not shared through an informer factory on purpose: the
// Watcher has to stop it and start another one (of another version, or after
// a Forbidden), which a factory cannot do.
type Watcher struct {
	// client lists and watches grants.
	client gatewayclientset.Interface
	// discovery says which version of the grant API is served. It must not
	// cache, or a CRD installed later is never seen.
	discovery discovery.DiscoveryInterface
	// resync is the informer's resync period; resyncs change no decision
	// and are filtered out.
	resync time.Duration
	// logger is named by the caller; informers log through it too.
	logger klog.Logger
	// index answers Check; it is rebuilt from scratch by every informer.
	index *Index
	// minProbe and maxProbe bound the retry backoff (tests shorten them).
	minProbe, maxProbe time.Duration

	// decided is set once grants were first found readable (the cache has
	// synced) or unreadable for a reason someone must fix; see HasSynced.
	decided atomic.Bool

	// versionMu guards version.
	versionMu sync.RWMutex
	// version is the API version grants are read from once its cache has
	// synced, and "" otherwise.
	version string

	// The fields below belong to the Run goroutine.

	// current is the running informer, if any.
	current *informerRun
	// delay is the last retry delay; 0 once grants have been available
	// for a whole probe interval.
	delay time.Duration
	// lastFailure is why the previous informer was stopped. It stays the
	// reason given to callers while the next informer syncs, so that users
	// see "forbidden" rather than a flapping "waiting for sync".
	lastFailure error
	// loggedError is the last reason logged as an error. The same reason
	// is logged once, however often it is seen again, until grants have
	// been available for a whole probe interval.
	loggedError string
}

// informerRun is one informer and the signals it sends to the Run loop.
type informerRun struct {
	// version is the API version the informer reads.
	version string
	// cancel stops the informer.
	cancel context.CancelFunc
	// done is closed when the informer has stopped; no event handler runs
	// after that.
	done chan struct{}
	// synced is closed when the Index holds the initial list.
	synced <-chan struct{}
	// errs carries list and watch errors to the Run loop. It has room for
	// one; the reflector retries and reports again, so dropping more loses
	// nothing.
	errs chan error
	// available is set once synced has been handled.
	available bool
}

// NewWatcher returns a Watcher that reads grants with gatewayClient. When
// discoveryClient is nil the gateway client's own discovery client is used.
// Nothing happens until Run.
func NewWatcher(gatewayClient gatewayclientset.Interface, discoveryClient discovery.DiscoveryInterface, resync time.Duration, logger klog.Logger) *Watcher {
	if discoveryClient == nil {
		discoveryClient = gatewayClient.Discovery()
	}
	w := &Watcher{
		client:    gatewayClient,
		discovery: discoveryClient,
		resync:    resync,
		logger:    logger,
		index:     NewIndex(),
		minProbe:  defaultMinProbe,
		maxProbe:  defaultMaxProbe,
	}
	w.index.reset(fmt.Errorf("%w: the API server has not been asked yet which ReferenceGrant API it serves", ErrUnavailable))
	return w
}

// Check implements Checker. Until grants can be read it returns an error
// wrapping ErrUnavailable.
func (w *Watcher) Check(ref Reference) (Decision, error) {
	return w.index.Check(ref)
}

// AddListener implements Checker. Listeners are also called with AllChanged
// each time the grant API becomes available, because every claim that waited
// for it may now proceed, and each time it stops being available, so that
// waiting claims learn why they wait.
func (w *Watcher) AddListener(fn func(Change)) {
	w.index.AddListener(fn)
}

// Checker returns the Watcher as a Checker, for callers that should not see
// the rest of it.
func (w *Watcher) Checker() Checker {
	return w
}

// Version returns "v1" or "v1beta1" when grants are being read from that API
// version, and "" while they are unavailable.
func (w *Watcher) Version() string {
	w.versionMu.RLock()
	defer w.versionMu.RUnlock()
	return w.version
}

// Err returns why grants are unavailable (wrapping ErrUnavailable), or nil
// when they are available; for health checks and status pages.
func (w *Watcher) Err() error {
	return w.index.err()
}

// HasSynced reports whether the Watcher has decided whether grants can be
// read: its cache has synced, or the grant API is missing, forbidden or
// undiscoverable. Until then Check fails only because the Watcher has not
// looked yet, so provisioning waits for this rather than telling claims that
// grants are unavailable on every start.
func (w *Watcher) HasSynced() bool {
	return w.decided.Load()
}

// Run discovers the grant API and keeps an informer for it running until ctx
// is done. Call it once, in its own goroutine: nobody else ever waits for it,
// which is what lets the sidecar work normally when the CRD is missing.
func (w *Watcher) Run(ctx context.Context) {
	w.logger.V(2).Info("Starting ReferenceGrant watcher", "group", apiGroup, "versions", preferredVersions)
	defer w.logger.V(2).Info("Stopped ReferenceGrant watcher")
	timer := time.NewTimer(0)
	defer timer.Stop()
	defer w.stop(fmt.Errorf("%w: the ReferenceGrant watcher has stopped", ErrUnavailable), false)

	for {
		// Nil channels block, so only the signals of a running informer
		// are waited for.
		var synced <-chan struct{}
		var errs <-chan error
		if r := w.current; r != nil {
			errs = r.errs
			if !r.available {
				synced = r.synced
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
			timer.Reset(w.probe(ctx))
		case <-synced:
			w.markAvailable()
		case err := <-errs:
			if retry := w.informerFailed(err); retry > 0 {
				timer.Reset(retry)
			}
		}
	}
}

// probe asks discovery which version is served, starts, switches or stops the
// informer to match, and returns when to ask again.
func (w *Watcher) probe(ctx context.Context) time.Duration {
	version, err := servedVersion(w.discovery)
	switch {
	case err != nil:
		if w.current != nil {
			// The informer reports its own trouble; a discovery hiccup
			// is no reason to stop reading grants.
			w.logger.V(2).Info("Discovery failed; keeping the current ReferenceGrant informer", "err", err)
		} else {
			w.stop(fmt.Errorf("%w: %w", ErrUnavailable, err), true)
		}
		return w.nextDelay()
	case version == "":
		w.lastFailure = nil
		w.stop(fmt.Errorf("%w: the API server serves no ReferenceGrant API (%s %v); install the Gateway API CRDs to use data sources in other namespaces",
			ErrUnavailable, apiGroup, preferredVersions), true)
		return w.nextDelay()
	case w.current != nil && w.current.version == version:
		if w.current.available {
			// Available for a whole probe interval: the next failure is
			// news again, and retries start from the short delay. Doing
			// this here rather than on sync keeps an informer that syncs
			// and then fails (list allowed, watch forbidden) from logging
			// an error and retrying quickly on every cycle.
			w.loggedError = ""
			w.delay = 0
		}
		return w.maxProbe
	}
	if w.current != nil {
		w.stop(fmt.Errorf("%w: switching from ReferenceGrant %s to %s", ErrUnavailable, w.current.version, version), false)
	}
	if err := w.start(ctx, version); err != nil {
		w.lastFailure = fmt.Errorf("%w: %w", ErrUnavailable, err)
		w.stop(w.lastFailure, true)
		return w.nextDelay()
	}
	return w.maxProbe
}

// start runs an informer for version that feeds the index.
func (w *Watcher) start(ctx context.Context, version string) error {
	var informer cache.SharedIndexInformer
	switch version {
	case "v1":
		informer = gatewayinformersv1.NewReferenceGrantInformer(w.client, metav1.NamespaceAll, w.resync, cache.Indexers{})
	case "v1beta1":
		informer = gatewayinformersv1beta1.NewReferenceGrantInformer(w.client, metav1.NamespaceAll, w.resync, cache.Indexers{})
	default:
		return fmt.Errorf("ReferenceGrant version %q is not supported", version)
	}
	r := &informerRun{version: version, done: make(chan struct{}), errs: make(chan error, 1)}
	// Without this handler the reflector would log every failed list on
	// its own, once per retry; the Run loop logs each reason once.
	if err := informer.SetWatchErrorHandlerWithContext(func(_ context.Context, _ *cache.Reflector, err error) {
		select {
		case r.errs <- err:
		default:
		}
	}); err != nil {
		return fmt.Errorf("setting the ReferenceGrant %s watch error handler: %w", version, err)
	}
	registration, err := informer.AddEventHandler(w.handlers())
	if err != nil {
		return fmt.Errorf("adding the ReferenceGrant %s event handler: %w", version, err)
	}
	// The registration, unlike the informer, is synced only once the
	// handlers have put the initial list into the index.
	r.synced = registration.HasSyncedChecker().Done()

	reason := w.lastFailure
	if reason == nil {
		reason = fmt.Errorf("%w: waiting for the ReferenceGrant %s cache to sync", ErrUnavailable, version)
	}
	w.index.reset(reason)

	runCtx, cancel := context.WithCancel(klog.NewContext(ctx, w.logger.WithValues("version", version)))
	r.cancel = cancel
	go func() {
		defer close(r.done)
		informer.RunWithContext(runCtx)
	}()
	w.current = r
	w.logger.V(2).Info("Started ReferenceGrant informer", "version", version)
	return nil
}

// handlers keeps the index in step with the informer.
func (w *Watcher) handlers() cache.ResourceEventHandler {
	return cache.ResourceEventHandlerDetailedFuncs{
		AddFunc: func(obj any, isInInitialList bool) {
			// The initial list wakes nobody one grant at a time:
			// listeners get one AllChanged when the cache has synced.
			w.upsert(obj, !isInInitialList)
		},
		UpdateFunc: func(oldObj, newObj any) {
			oldGrant, err1 := asGrant(oldObj)
			newGrant, err2 := asGrant(newObj)
			if err1 == nil && err2 == nil && oldGrant.ResourceVersion == newGrant.ResourceVersion {
				// A resync: the object has not changed.
				return
			}
			w.upsert(newObj, true)
		},
		DeleteFunc: func(obj any) {
			id, err := idOf(obj)
			if err != nil {
				w.logger.Error(err, "Ignoring deleted ReferenceGrant")
				return
			}
			if c, changed := w.index.remove(id); changed {
				w.logger.V(4).Info("ReferenceGrant deleted", "grant", klog.KRef(id.namespace, id.name), "change", c)
				w.index.notify(c)
			}
		},
	}
}

// upsert indexes one grant from the informer; notify is false for the initial
// list.
func (w *Watcher) upsert(obj any, notify bool) {
	g, err := asGrant(obj)
	if err != nil {
		w.logger.Error(err, "Ignoring ReferenceGrant event")
		return
	}
	perms := permissionsOf(g)
	c, changed := w.index.upsert(g.Namespace, g.Name, g.ResourceVersion, perms)
	if !changed {
		return
	}
	w.logger.V(4).Info("ReferenceGrant indexed", "grant", klog.KObj(g), "resourceVersion", g.ResourceVersion, "permissions", len(perms), "change", c)
	if notify {
		w.index.notify(c)
	}
}

// markAvailable lets checks be answered once the informer has synced, and
// tells listeners that every namespace may have changed.
func (w *Watcher) markAvailable() {
	r := w.current
	r.available = true
	w.index.setAvailable()
	w.setVersion(r.version)
	if w.loggedError != "" {
		w.logger.Info("ReferenceGrants are available again", "version", r.version, "grants", w.index.Len())
	} else {
		w.logger.V(2).Info("ReferenceGrants are available", "version", r.version, "grants", w.index.Len())
	}
	w.lastFailure = nil
	w.decided.Store(true)
	w.index.notify(AllChanged)
}

// informerFailed handles a list or watch error of the current informer and
// returns when to retry if the informer had to be stopped (0 otherwise).
//
// Forbidden, Unauthorized and NotFound do not heal on their own, and once the
// informer can no longer list, its cache silently goes stale (a deleted grant
// would keep allowing references), so the informer is stopped and the index
// dropped; the Run loop starts a new one after a backoff, and that one's sync
// is what tells us the problem is fixed. Other errors are the reflector's to
// retry.
func (w *Watcher) informerFailed(err error) time.Duration {
	r := w.current
	if apierrors.IsForbidden(err) || apierrors.IsUnauthorized(err) || apierrors.IsNotFound(err) {
		w.lastFailure = fmt.Errorf("%w: reading ReferenceGrants (%s/%s) failed; the provisioner needs list and watch on %s.%s: %w",
			ErrUnavailable, apiGroup, r.version, resource, apiGroup, err)
		w.stop(w.lastFailure, true)
		return w.nextDelay()
	}
	if r.available {
		w.logger.V(2).Info("Watching ReferenceGrants failed; the informer retries", "version", r.version, "err", err)
		return 0
	}
	// Until the first sync, say why callers are still waiting.
	reason := fmt.Errorf("%w: waiting for the ReferenceGrant %s cache to sync: %w", ErrUnavailable, r.version, err)
	w.index.setUnavailable(reason)
	w.report(reason, true)
	return 0
}

// stop makes checks fail with reason, stops the current informer if there is
// one, and drops the grants it had indexed. asError says whether the reason
// is a problem someone must fix (logged once as an error) or a normal step.
func (w *Watcher) stop(reason error, asError bool) {
	if asError {
		w.decided.Store(true)
	}
	w.index.setUnavailable(reason)
	w.setVersion("")
	// Decisions taken a moment ago may have been "no grant" where the truth
	// is now "cannot tell": listeners retry their waiting claims so those
	// learn why they wait.
	if r := w.current; r != nil && r.available {
		defer w.index.notify(AllChanged)
	}
	if r := w.current; r != nil {
		r.cancel()
		<-r.done
		w.current = nil
		w.logger.V(2).Info("Stopped ReferenceGrant informer", "version", r.version)
	}
	w.index.reset(reason)
	w.report(reason, asError)
}

// report logs why grants are unavailable: an error once per distinct reason,
// anything else at V(2).
func (w *Watcher) report(reason error, asError bool) {
	switch {
	case !asError:
		w.logger.V(2).Info("ReferenceGrants unavailable", "reason", reason.Error())
	case reason.Error() == w.loggedError:
		w.logger.V(4).Info("ReferenceGrants still unavailable", "reason", reason.Error())
	default:
		w.loggedError = reason.Error()
		w.logger.Error(reason, "Claims with a data source in another namespace wait until this is fixed; retrying")
	}
}

// nextDelay returns the next retry delay: minProbe, then doubling up to
// maxProbe.
func (w *Watcher) nextDelay() time.Duration {
	if w.delay == 0 {
		w.delay = w.minProbe
	} else {
		w.delay = min(2*w.delay, w.maxProbe)
	}
	return w.delay
}

func (w *Watcher) setVersion(version string) {
	w.versionMu.Lock()
	defer w.versionMu.Unlock()
	w.version = version
}
