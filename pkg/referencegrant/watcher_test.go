package referencegrant

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apimachinery/pkg/watch"
	fakediscovery "k8s.io/client-go/discovery/fake"
	clienttesting "k8s.io/client-go/testing"
	gatewayfake "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned/fake"
)

// discoveryStub is client-go's fake discovery with a lock around it, so a
// test can change what is served while the Watcher asks.
type discoveryStub struct {
	*fakediscovery.FakeDiscovery
	mu    sync.Mutex
	calls atomic.Int32
}

func newDiscoveryStub(versions ...string) *discoveryStub {
	d := &discoveryStub{FakeDiscovery: &fakediscovery.FakeDiscovery{Fake: &clienttesting.Fake{}}}
	d.serve(versions...)
	return d
}

// serve makes the stub serve referencegrants in exactly these versions.
func (d *discoveryStub) serve(versions ...string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.Resources = nil
	for _, v := range versions {
		d.Resources = append(d.Resources, &metav1.APIResourceList{
			GroupVersion: apiGroup + "/" + v,
			APIResources: []metav1.APIResource{{Name: resource, Namespaced: true, Kind: "ReferenceGrant", Verbs: []string{"list", "watch"}}},
		})
	}
}

func (d *discoveryStub) ServerResourcesForGroupVersion(groupVersion string) (*metav1.APIResourceList, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.calls.Add(1)
	return d.FakeDiscovery.ServerResourcesForGroupVersion(groupVersion)
}

// logSink records what the Watcher logs as errors.
type logSink struct {
	mu     *sync.Mutex
	errors *[]string
}

func (s logSink) Init(logr.RuntimeInfo)          {}
func (s logSink) Enabled(int) bool               { return true }
func (s logSink) Info(int, string, ...any)       {}
func (s logSink) WithValues(...any) logr.LogSink { return s }
func (s logSink) WithName(string) logr.LogSink   { return s }
func (s logSink) Error(err error, msg string, _ ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	*s.errors = append(*s.errors, msg+": "+err.Error())
}

// errorLogs returns a logger and a function that returns the errors logged
// through it that contain substr.
func errorLogs() (logr.Logger, func(substr string) []string) {
	var mu sync.Mutex
	var lines []string
	logger := logr.New(logSink{mu: &mu, errors: &lines})
	return logger, func(substr string) []string {
		mu.Lock()
		defer mu.Unlock()
		var found []string
		for _, l := range lines {
			if strings.Contains(l, substr) {
				found = append(found, l)
			}
		}
		return found
	}
}

// runWatcher starts a Watcher with short probe intervals and stops it when
// the test ends.
func runWatcher(t *testing.T, client *gatewayfake.Clientset, disc *discoveryStub, logger logr.Logger) (*Watcher, *recorder) {
	t.Helper()
	w := NewWatcher(client, disc, 0, logger)
	w.minProbe = 5 * time.Millisecond
	w.maxProbe = 20 * time.Millisecond
	var calls recorder
	w.AddListener(calls.listen)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		w.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return w, &calls
}

// eventually polls cond until it holds, failing the test after a while.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	err := wait.PollUntilContextTimeout(context.Background(), 5*time.Millisecond, 10*time.Second, true,
		func(context.Context) (bool, error) { return cond(), nil })
	if err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
}

func checkIs(w *Watcher, ref Reference, want Decision) func() bool {
	return func() bool {
		got, err := w.Check(ref)
		return err == nil && got == want
	}
}

func TestWatcherBecomesAvailableWhenCRDIsInstalled(t *testing.T) {
	ctx := context.Background()
	nightly := snapshotRef("dev", "prod", "nightly")
	client := gatewayfake.NewClientset(newGrant("prod", "existing", claimsFrom("dev"), snapshots("nightly")))
	disc := newDiscoveryStub()
	logger, errorsLogged := errorLogs()
	w, calls := runWatcher(t, client, disc, logger)

	// No CRD: unavailable with a reason, however often discovery is asked.
	eventually(t, "discovery to be asked repeatedly", func() bool { return disc.calls.Load() >= 10 })
	_, err := w.Check(nightly)
	if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "serves no ReferenceGrant API") {
		t.Fatalf("Check without CRD: err = %v, want ErrUnavailable saying the API is not served", err)
	}
	if v := w.Version(); v != "" {
		t.Errorf("Version without CRD = %q, want empty", v)
	}
	if got := errorsLogged("serves no ReferenceGrant API"); len(got) != 1 {
		t.Errorf("logged %d errors for the missing CRD, want 1: %q", len(got), got)
	}
	if calls.saw(AllChanged) {
		t.Error("listeners were told grants are available before they are")
	}

	// The CRD appears: the informer starts and every namespace is retried.
	disc.serve("v1", "v1beta1")
	eventually(t, "version v1", func() bool { return w.Version() == "v1" })
	if err := w.Err(); err != nil {
		t.Errorf("Err once available = %v", err)
	}
	if got, err := w.Check(nightly); err != nil || got != (Decision{Allowed: true, Grant: "existing"}) {
		t.Errorf("Check once available = %+v, %v; want allowed by existing", got, err)
	}
	if !calls.saw(AllChanged) {
		t.Error("listeners were not called with AllChanged when grants became available")
	}
	calls.take()

	// Changes arrive through the informer and tell listeners what they
	// may have changed: the from and to entries an add or a delete
	// concerns, and for an update those that were added or withdrawn.
	weekly := snapshotRef("qa", "prod", "weekly")
	added := newGrant("prod", "added", claimsFrom("qa"), allSnapshots())
	if _, err := client.GatewayV1().ReferenceGrants("prod").Create(ctx, added, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the new grant", checkIs(w, weekly, Decision{Allowed: true, Grant: "added"}))
	eventually(t, "a listener call for qa's claims", func() bool {
		return calls.saw(claimsChange("prod", []string{"qa"}, snapshotTarget("")))
	})

	narrowed := added.DeepCopy()
	narrowed.ResourceVersion = ""
	narrowed.Spec.To = snapshots("daily")
	if _, err := client.GatewayV1().ReferenceGrants("prod").Update(ctx, narrowed, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the narrowed grant", checkIs(w, weekly, Decision{}))
	eventually(t, "a listener call for the narrowed grant", func() bool {
		return calls.saw(claimsChange("prod", []string{"qa"}, snapshotTarget(""), snapshotTarget("daily")))
	})

	if err := client.GatewayV1().ReferenceGrants("prod").Delete(ctx, "existing", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the deleted grant", checkIs(w, nightly, Decision{}))
	eventually(t, "a listener call for the deleted grant", func() bool {
		return calls.saw(claimsChange("prod", []string{"dev"}, snapshotTarget("nightly")))
	})
	if got := calls.take(); slices.ContainsFunc(got, func(c Change) bool { return c.All }) {
		t.Errorf("grant edits while available told listeners everything changed: %v", got)
	}

	// The CRD is removed again: back to unavailable, and listeners retry
	// every namespace so waiting claims learn why they wait.
	calls.take()
	disc.serve()
	eventually(t, "unavailable again", func() bool {
		_, err := w.Check(nightly)
		return errors.Is(err, ErrUnavailable) && w.Version() == ""
	})
	eventually(t, "a listener call with AllChanged when grants became unavailable", func() bool { return calls.saw(AllChanged) })
}

func TestWatcherPrefersV1(t *testing.T) {
	tests := []struct {
		name        string
		served      []string
		wantVersion string
	}{
		{name: "both served", served: []string{"v1beta1", "v1"}, wantVersion: "v1"},
		{name: "only v1", served: []string{"v1"}, wantVersion: "v1"},
		{name: "only v1beta1", served: []string{"v1beta1"}, wantVersion: "v1beta1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// The fake keeps each version's objects apart, so the name of
			// the granting grant shows which version was read.
			client := gatewayfake.NewClientset(
				newGrant("prod", "from-v1", claimsFrom("dev"), allSnapshots()),
				newBetaGrant("prod", "from-v1beta1", claimsFrom("dev"), allSnapshots()),
			)
			w, _ := runWatcher(t, client, newDiscoveryStub(tc.served...), logr.Discard())
			eventually(t, "a version", func() bool { return w.Version() != "" })
			if v := w.Version(); v != tc.wantVersion {
				t.Errorf("Version = %q, want %q", v, tc.wantVersion)
			}
			want := Decision{Allowed: true, Grant: "from-" + tc.wantVersion}
			if got, err := w.Check(snapshotRef("dev", "prod", "x")); err != nil || got != want {
				t.Errorf("Check = %+v, %v; want %+v", got, err, want)
			}
		})
	}
}

func TestWatcherSwitchesToV1WhenItIsServed(t *testing.T) {
	client := gatewayfake.NewClientset(
		newGrant("prod", "from-v1", claimsFrom("dev"), allSnapshots()),
		newBetaGrant("prod", "from-v1beta1", claimsFrom("dev"), allSnapshots()),
	)
	disc := newDiscoveryStub("v1beta1")
	w, _ := runWatcher(t, client, disc, logr.Discard())
	ref := snapshotRef("dev", "prod", "x")
	eventually(t, "v1beta1", checkIs(w, ref, Decision{Allowed: true, Grant: "from-v1beta1"}))
	disc.serve("v1beta1", "v1")
	eventually(t, "v1", checkIs(w, ref, Decision{Allowed: true, Grant: "from-v1"}))
	if v := w.Version(); v != "v1" {
		t.Errorf("Version = %q, want v1", v)
	}
}

func TestWatcherRecoversWhenListingIsAllowed(t *testing.T) {
	client := gatewayfake.NewClientset(newGrant("prod", "g", claimsFrom("dev"), allSnapshots()))
	var forbidden atomic.Bool
	var lists atomic.Int32
	forbidden.Store(true)
	client.PrependReactor("list", resource, func(clienttesting.Action) (bool, runtime.Object, error) {
		lists.Add(1)
		if forbidden.Load() {
			return true, nil, apierrors.NewForbidden(schema.GroupResource{Group: apiGroup, Resource: resource}, "",
				fmt.Errorf("RBAC: access denied"))
		}
		return false, nil, nil
	})
	logger, errorsLogged := errorLogs()
	w, calls := runWatcher(t, client, newDiscoveryStub("v1"), logger)
	ref := snapshotRef("dev", "prod", "nightly")

	// Forbidden: unavailable with the reason, retried, logged once.
	eventually(t, "several refused lists", func() bool { return lists.Load() >= 5 })
	_, err := w.Check(ref)
	if !errors.Is(err, ErrUnavailable) || !apierrors.IsForbidden(err) {
		t.Fatalf("Check while forbidden: err = %v, want ErrUnavailable wrapping Forbidden", err)
	}
	if !strings.Contains(err.Error(), "list and watch") {
		t.Errorf("Check while forbidden: err = %q does not say which permission is missing", err)
	}
	if got := errorsLogged("forbidden"); len(got) != 1 {
		t.Errorf("logged %d errors for Forbidden, want 1: %q", len(got), got)
	}
	if v := w.Version(); v != "" {
		t.Errorf("Version while forbidden = %q, want empty", v)
	}

	// RBAC fixed: available without a restart, and everyone is told.
	forbidden.Store(false)
	eventually(t, "the grant", checkIs(w, ref, Decision{Allowed: true, Grant: "g"}))
	if !calls.saw(AllChanged) {
		t.Error("listeners were not called with AllChanged when grants became available")
	}
	if v := w.Version(); v != "v1" {
		t.Errorf("Version = %q, want v1", v)
	}
}

func TestWatcherLogsOnceWhenOnlyWatchIsForbidden(t *testing.T) {
	client := gatewayfake.NewClientset(newGrant("prod", "g", claimsFrom("dev"), allSnapshots()))
	var watches atomic.Int32
	client.PrependWatchReactor(resource, func(clienttesting.Action) (bool, watch.Interface, error) {
		watches.Add(1)
		return true, nil, apierrors.NewForbidden(schema.GroupResource{Group: apiGroup, Resource: resource}, "",
			fmt.Errorf("RBAC: watch denied"))
	})
	logger, errorsLogged := errorLogs()
	w, _ := runWatcher(t, client, newDiscoveryStub("v1"), logger)

	// Each cycle lists, syncs, fails to watch and stops the informer.
	eventually(t, "several refused watches", func() bool { return watches.Load() >= 4 })
	if got := errorsLogged("forbidden"); len(got) != 1 {
		t.Errorf("logged %d errors for Forbidden, want 1: %q", len(got), got)
	}
	if _, err := w.Check(snapshotRef("dev", "prod", "x")); err != nil && !errors.Is(err, ErrUnavailable) {
		t.Errorf("Check: err = %v, want nil or ErrUnavailable", err)
	}
}

func TestWatcherBeforeRun(t *testing.T) {
	w := NewWatcher(gatewayfake.NewClientset(), nil, 0, logr.Discard())
	if _, err := w.Checker().Check(snapshotRef("dev", "prod", "nightly")); !errors.Is(err, ErrUnavailable) {
		t.Errorf("Check before Run: err = %v, want ErrUnavailable", err)
	}
	if got, err := w.Check(snapshotRef("prod", "prod", "nightly")); err != nil || !got.Allowed {
		t.Errorf("same-namespace Check before Run = %+v, %v; want allowed", got, err)
	}
}
