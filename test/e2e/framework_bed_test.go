package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	snapshotclient "github.com/kubernetes-csi/external-snapshotter/client/v8/clientset/versioned"
	corev1 "k8s.io/api/core/v1"
	apiextensionsclient "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	gatewayclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"

	"github.com/crossns/external-provisioner/test/cluster"
)

// Timeouts of the e2e waits: controllers on the bed react in about a second.
const (
	pollInterval     = 250 * time.Millisecond
	objectWait       = 2 * time.Minute
	namespaceCleanup = 2 * time.Minute
)

// clients are the typed clients a test talks to the bed with, as the admin.
type clients struct {
	kube          kubernetes.Interface
	snapshots     snapshotclient.Interface
	gateway       gatewayclient.Interface
	apiextensions apiextensionsclient.Interface
}

// requireBed skips the test under -short and returns the bed's clients.
// On failure it names the component logs to read. At the end of the test it
// checks the bed's invariants (invariants_test.go).
func requireBed(t *testing.T) *clients {
	t.Helper()
	if bed == nil {
		t.Skip("no test bed (-short)")
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("bed logs in %s (driver calls: %s)", bed.LogDir(), bed.DriverCallLogPath())
		}
	})
	cfg := bed.RESTConfig()
	c := &clients{}
	var err error
	if c.kube, err = kubernetes.NewForConfig(cfg); err != nil {
		t.Fatalf("kube client: %v", err)
	}
	if c.snapshots, err = snapshotclient.NewForConfig(cfg); err != nil {
		t.Fatalf("snapshot client: %v", err)
	}
	if c.gateway, err = gatewayclient.NewForConfig(cfg); err != nil {
		t.Fatalf("gateway-api client: %v", err)
	}
	if c.apiextensions, err = apiextensionsclient.NewForConfig(cfg); err != nil {
		t.Fatalf("apiextensions client: %v", err)
	}
	// Registered before any cleanup of the test, so it runs after them all.
	checkInvariantsAtEnd(t)
	return c
}

// testContext is a context that ends with the test.
func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	return ctx
}

// createNamespace makes a namespace unique to the test and deletes it (and
// waits for the namespace controller to empty it) when the test ends.
func createNamespace(t *testing.T, c *clients, prefix string) string {
	t.Helper()
	ctx := testContext(t)
	ns, err := c.kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "e2e-" + prefix + "-"},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("creating namespace: %v", err)
	}
	name := ns.Name
	ledger.addNamespace(name, t.Name())
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), namespaceCleanup)
		defer cancel()
		if err := c.kube.CoreV1().Namespaces().Delete(ctx, name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("deleting namespace %s: %v", name, err)
			return
		}
		err := wait.PollUntilContextCancel(ctx, pollInterval, true, func(ctx context.Context) (bool, error) {
			_, err := c.kube.CoreV1().Namespaces().Get(ctx, name, metav1.GetOptions{})
			return apierrors.IsNotFound(err), nil
		})
		if err != nil {
			t.Errorf("namespace %s still there %s after deleting it: %v", name, namespaceCleanup, err)
		}
	})
	return name
}

// eventually polls cond until it holds, failing the test with the last
// state cond described when it does not within timeout.
func eventually(t *testing.T, timeout time.Duration, what string, cond func(ctx context.Context) (bool, string, error)) {
	t.Helper()
	ctx, cancel := context.WithTimeout(testContext(t), timeout)
	defer cancel()
	var last string
	err := wait.PollUntilContextCancel(ctx, pollInterval, true, func(ctx context.Context) (bool, error) {
		ok, state, err := cond(ctx)
		last = state
		return ok, err
	})
	if err != nil {
		t.Fatalf("waiting %s for %s: %v; last seen: %s", timeout, what, err, last)
	}
}

// bedName names cluster-scoped objects after the test namespace, so tests
// running against one bed never collide.
func bedName(ns, what string) string { return fmt.Sprintf("%s-%s", ns, what) }

// driverName is the CSI driver of the bed.
const driverName = cluster.DriverName
