package snapshotapi

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	snapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	snapfake "github.com/kubernetes-csi/external-snapshotter/client/v8/clientset/versioned/fake"
	snapinformers "github.com/kubernetes-csi/external-snapshotter/client/v8/informers/externalversions"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	fakediscovery "k8s.io/client-go/discovery/fake"
	clienttesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"
)

// discoveryStub is client-go's fake discovery with a lock, so a test can
// change what is served while the Watcher asks, and an error to fail with.
type discoveryStub struct {
	*fakediscovery.FakeDiscovery
	mu    sync.Mutex
	err   error
	calls atomic.Int32
}

func newDiscoveryStub(served ...string) *discoveryStub {
	d := &discoveryStub{FakeDiscovery: &fakediscovery.FakeDiscovery{Fake: &clienttesting.Fake{}}}
	d.serve(served...)
	return d
}

// serve makes the stub serve GroupVersion with exactly these resources; none
// means the group version is not served at all.
func (d *discoveryStub) serve(resources ...string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.Resources = nil
	if len(resources) == 0 {
		return
	}
	list := &metav1.APIResourceList{GroupVersion: GroupVersion}
	for _, r := range resources {
		list.APIResources = append(list.APIResources, metav1.APIResource{Name: r, Verbs: []string{"list", "watch"}})
	}
	d.Resources = []*metav1.APIResourceList{list}
}

func (d *discoveryStub) fail(err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.err = err
}

func (d *discoveryStub) ServerResourcesForGroupVersion(gv string) (*metav1.APIResourceList, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.calls.Add(1)
	if d.err != nil {
		return nil, d.err
	}
	return d.FakeDiscovery.ServerResourcesForGroupVersion(gv)
}

var allResources = []string{"volumesnapshots", "volumesnapshotcontents", "volumesnapshotclasses"}

func snapshot(ns, name string) *snapshotv1.VolumeSnapshot {
	return &snapshotv1.VolumeSnapshot{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
}

func content(name string) *snapshotv1.VolumeSnapshotContent {
	return &snapshotv1.VolumeSnapshotContent{ObjectMeta: metav1.ObjectMeta{Name: name}}
}

func newTestWatcher(t *testing.T, disc *discoveryStub, objects ...runtime.Object) *Watcher {
	t.Helper()
	return NewWatcher(snapfake.NewSimpleClientset(objects...), disc, 0, klog.Background())
}

func TestProbe(t *testing.T) {
	tests := []struct {
		name      string
		discovery *discoveryStub
		// wantServed: Probe returns true and the listers read the objects.
		wantServed bool
		// wantMessage is part of the "not served" error.
		wantMessage string
	}{
		{
			name:        "group version not served: CRDs missing",
			discovery:   newDiscoveryStub(),
			wantMessage: "is not served: install the snapshot CRDs",
		},
		{
			name:        "only VolumeSnapshotClasses served: half-installed CRDs",
			discovery:   newDiscoveryStub("volumesnapshotclasses"),
			wantMessage: "is not served: install the snapshot CRDs",
		},
		{
			name: "discovery fails",
			discovery: func() *discoveryStub {
				d := newDiscoveryStub(allResources...)
				d.fail(errors.New("connection refused"))
				return d
			}(),
			wantMessage: "connection refused",
		},
		{
			name:       "served",
			discovery:  newDiscoveryStub(allResources...),
			wantServed: true,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := newTestWatcher(t, tc.discovery, snapshot("prod", "nightly"), content("content-nightly"))
			if w.HasSynced() {
				t.Fatal("HasSynced before the first probe = true, want false")
			}
			if got := w.Probe(t.Context()); got != tc.wantServed {
				t.Fatalf("Probe = %v, want %v", got, tc.wantServed)
			}
			if !w.HasSynced() {
				t.Error("HasSynced after the first probe = false, want true: the Watcher has decided")
			}
			snaps, contents, err := w.Listers()
			if !tc.wantServed {
				if !errors.Is(err, ErrNotServed) || !strings.Contains(err.Error(), tc.wantMessage) {
					t.Fatalf("Listers error = %v, want ErrNotServed saying %q", err, tc.wantMessage)
				}
				if !strings.Contains(err.Error(), GroupVersion) {
					t.Errorf("Listers error %q does not name %s", err, GroupVersion)
				}
				return
			}
			if err != nil {
				t.Fatalf("Listers: %v", err)
			}
			if _, err := snaps.VolumeSnapshots("prod").Get("nightly"); err != nil {
				t.Errorf("reading the snapshot: %v", err)
			}
			if _, err := contents.Get("content-nightly"); err != nil {
				t.Errorf("reading the content: %v", err)
			}
		})
	}
}

// handlerLog records the objects an event handler added, so a test can check
// that a consumer registered through OnAvailable sees every object.
type handlerLog struct {
	mu    sync.Mutex
	added []string
}

func (h *handlerLog) register(t *testing.T, f snapinformers.SharedInformerFactory) cache.ResourceEventHandlerRegistration {
	reg, err := f.Snapshot().V1().VolumeSnapshots().Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) {
			h.mu.Lock()
			defer h.mu.Unlock()
			h.added = append(h.added, obj.(*snapshotv1.VolumeSnapshot).Name)
		},
	})
	if err != nil {
		t.Errorf("adding a handler: %v", err)
	}
	return reg
}

func (h *handlerLog) names() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.added...)
}

// TestSnapshotAPIInstalledWhileRunning: the CRDs appear after the start; the
// callbacks registered before are called once, before the informers run, and
// a callback registered afterwards is called at once; both see the snapshot
// that existed all along.
func TestSnapshotAPIInstalledWhileRunning(t *testing.T) {
	ctx := t.Context()
	disc := newDiscoveryStub()
	w := newTestWatcher(t, disc, snapshot("prod", "nightly"))

	var early handlerLog
	var earlyCalls, earlyStarted atomic.Int32
	var earlyReg cache.ResourceEventHandlerRegistration
	w.OnAvailable(func(f snapinformers.SharedInformerFactory) {
		earlyCalls.Add(1)
		if f.Snapshot().V1().VolumeSnapshots().Informer().HasSynced() {
			earlyStarted.Add(1)
		}
		earlyReg = early.register(t, f)
	})

	if w.Probe(ctx) {
		t.Fatal("Probe without CRDs = true")
	}
	if n := earlyCalls.Load(); n != 0 {
		t.Fatalf("callback called %d times before the API is served", n)
	}
	if _, _, err := w.Listers(); !errors.Is(err, ErrNotServed) {
		t.Fatalf("Listers without CRDs: err = %v, want ErrNotServed", err)
	}

	disc.serve(allResources...)
	if !w.Probe(ctx) {
		t.Fatal("Probe with CRDs = false")
	}
	if !w.Probe(ctx) {
		t.Fatal("second Probe = false")
	}
	if n := earlyCalls.Load(); n != 1 {
		t.Fatalf("callback called %d times, want once", n)
	}
	if earlyStarted.Load() != 0 {
		t.Error("callback ran after the informers had synced, want before they start")
	}
	calls := disc.calls.Load()
	w.Probe(ctx)
	if got := disc.calls.Load(); got != calls {
		t.Errorf("Probe asked discovery again once available (%d calls, was %d)", got, calls)
	}

	var late handlerLog
	var lateCalls atomic.Int32
	var lateReg cache.ResourceEventHandlerRegistration
	w.OnAvailable(func(f snapinformers.SharedInformerFactory) {
		lateCalls.Add(1)
		lateReg = late.register(t, f)
	})
	if n := lateCalls.Load(); n != 1 {
		t.Fatalf("callback registered once available called %d times, want once at once", n)
	}
	for name, c := range map[string]struct {
		log *handlerLog
		reg cache.ResourceEventHandlerRegistration
	}{"early": {&early, earlyReg}, "late": {&late, lateReg}} {
		if !cache.WaitForCacheSync(ctx.Done(), c.reg.HasSynced) {
			t.Fatalf("%s handler never synced", name)
		}
		if got := c.log.names(); len(got) != 1 || got[0] != "nightly" {
			t.Errorf("%s handler saw %v, want [nightly]", name, got)
		}
	}
	snaps, _, err := w.Listers()
	if err != nil {
		t.Fatalf("Listers once served: %v", err)
	}
	if _, err := snaps.VolumeSnapshots("prod").Get("nightly"); err != nil {
		t.Errorf("reading the snapshot: %v", err)
	}
}

// TestRunProbesUntilServed: Run keeps asking while the API is missing and
// stops asking once it is served and synced.
func TestRunProbesUntilServed(t *testing.T) {
	disc := newDiscoveryStub()
	w := newTestWatcher(t, disc, snapshot("prod", "nightly"))
	w.interval = time.Millisecond
	done := make(chan struct{})
	go func() {
		defer close(done)
		w.Run(t.Context())
	}()
	eventually(t, "discovery to be asked repeatedly", func() bool { return disc.calls.Load() >= 5 })
	if !w.HasSynced() {
		t.Error("HasSynced while not served = false, want true (decided)")
	}
	disc.serve(allResources...)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return once the API was served")
	}
	if _, _, err := w.Listers(); err != nil {
		t.Fatalf("Listers after Run: %v", err)
	}
}

// TestRunStopsWithContext: Run returns when ctx ends while the API is missing.
func TestRunStopsWithContext(t *testing.T) {
	w := newTestWatcher(t, newDiscoveryStub())
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		w.Run(ctx)
	}()
	eventually(t, "the first probe", w.HasSynced)
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after ctx ended")
	}
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	err := wait.PollUntilContextTimeout(t.Context(), time.Millisecond, 10*time.Second, true,
		func(context.Context) (bool, error) { return cond(), nil })
	if err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
}
