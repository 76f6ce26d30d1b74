package snapshotapi

import (
	"context"
	"fmt"
	"strings"
	"time"

	snapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	snapclientset "github.com/kubernetes-csi/external-snapshotter/client/v8/clientset/versioned"
	snapinformers "github.com/kubernetes-csi/external-snapshotter/client/v8/informers/externalversions"
	snapshotlisters "github.com/kubernetes-csi/external-snapshotter/client/v8/listers/volumesnapshot/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/crossns/external-provisioner/pkg/access"
)

// ContentsRule is what caching VolumeSnapshotContents needs. Upstream
// external-provisioner's ClusterRole grants only get and list on them (it
// reads each content from kube-apiserver); without watch a cache would
// relist and log a failure every few seconds.
var ContentsRule = access.Rule{Group: "snapshot.storage.k8s.io", Resource: "volumesnapshotcontents", Verbs: []string{"list", "watch"}}

// DefaultAccessRecheck is how often a Watcher reading contents from
// kube-apiserver asks again whether it may cache them: a rule added later
// takes effect within it, without a restart.
const DefaultAccessRecheck = 5 * time.Minute

// directTimeout bounds one read of a content from kube-apiserver.
const directTimeout = 10 * time.Second

// directContents reads each VolumeSnapshotContent from kube-apiserver, as
// upstream does: the lister used while the sidecar may not watch contents.
// Only Get is served; List reports that the contents are not cached.
type directContents struct {
	client snapclientset.Interface
}

var _ snapshotlisters.VolumeSnapshotContentLister = directContents{}

func (d directContents) Get(name string) (*snapshotv1.VolumeSnapshotContent, error) {
	ctx, cancel := context.WithTimeout(context.Background(), directTimeout)
	defer cancel()
	return d.client.SnapshotV1().VolumeSnapshotContents().Get(ctx, name, metav1.GetOptions{})
}

func (d directContents) List(labels.Selector) ([]*snapshotv1.VolumeSnapshotContent, error) {
	return nil, fmt.Errorf("VolumeSnapshotContents are not cached: csi-provisioner may not %s", ContentsRule)
}

// CheckContentsAccess makes the Watcher ask c, when the API is found served
// and then every DefaultAccessRecheck until allowed, whether it may cache
// VolumeSnapshotContents (ContentsRule). Until it may, contents are read from
// kube-apiserver one Get at a time and OnContentsCached callbacks wait.
// Without a Checker the Watcher caches them at once. Call before Run.
func (w *Watcher) CheckContentsAccess(c access.Checker) {
	w.access = c
}

// OnContentsCached registers fn to be called with the informer factory once
// VolumeSnapshotContents are cached (with the snapshots, or later when the
// rule is added), before the content informer starts; at once when they are
// cached already. Same contract as OnAvailable otherwise.
func (w *Watcher) OnContentsCached(fn func(snapinformers.SharedInformerFactory)) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.factory == nil || !w.contentsCached.Load() {
		w.contentCallbacks = append(w.contentCallbacks, fn)
		return
	}
	fn(w.factory)
	w.factory.Start(w.stop)
}

// ContentsCached reports whether VolumeSnapshotContents are read from a cache.
func (w *Watcher) ContentsCached() bool { return w.contentsCached.Load() }

// mayCacheContents asks the Checker; an unanswered review counts as allowed
// (the informer's own errors then show what is wrong).
func (w *Watcher) mayCacheContents(ctx context.Context) bool {
	if w.access == nil {
		return true
	}
	missing, err := w.access.Allowed(ctx, ContentsRule)
	if err != nil {
		w.logger.Error(err, "Cannot tell whether VolumeSnapshotContents may be cached; caching them")
		return true
	}
	if len(missing) == 0 {
		return true
	}
	if !w.warnedAccess {
		w.warnedAccess = true
		w.logger.Info("WARNING: RBAC does not allow csi-provisioner to "+strings.Join(missing, ", ")+" volumesnapshotcontents (upstream's ClusterRole grants get and list only): "+
			"restores read each content from kube-apiserver, as upstream does, and the content of a snapshot being restored is not held against deletion. "+
			"Add this rule to the ClusterRole to cache and hold contents; it takes effect within "+w.recheck.String()+", without a restart",
			"rule", ContentsRule.String()+`; and for the hold: verbs ["patch", "delete"]`)
	}
	return false
}

// registerContents asks the factory for the content informer (so Start runs
// it), hands it to the content callbacks and makes Listers use its cache once
// synced. Called with w.mu held.
func (w *Watcher) registerContents(factory snapinformers.SharedInformerFactory) {
	informer := factory.Snapshot().V1().VolumeSnapshotContents()
	w.cachedContents = informer.Lister()
	w.contentsSynced = informer.Informer().HasSynced
	for _, fn := range w.contentCallbacks {
		fn(factory)
	}
	w.contentCallbacks = nil
	w.contentsCached.Store(true)
}

// recheckContents asks every recheck interval whether contents may be cached
// now; when they may, it starts their informer and switches Listers to its
// cache once synced. It returns when that is done or ctx ends.
func (w *Watcher) recheckContents(ctx context.Context) {
	ticker := time.NewTicker(w.recheck)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
		if !w.mayCacheContents(ctx) {
			continue
		}
		w.mu.Lock()
		w.registerContents(w.factory)
		w.factory.Start(w.stop)
		synced := w.contentsSynced
		w.mu.Unlock()
		if !waitSynced(ctx, synced) {
			return
		}
		w.mu.Lock()
		w.contents = w.cachedContents
		w.mu.Unlock()
		w.logger.Info("VolumeSnapshotContents are cached now: RBAC allows it", "rule", ContentsRule.String())
		return
	}
}

func waitSynced(ctx context.Context, synced func() bool) bool {
	ticker := time.NewTicker(100 * time.Millisecond)
	defer ticker.Stop()
	for !synced() {
		select {
		case <-ctx.Done():
			return false
		case <-ticker.C:
		}
	}
	return true
}
