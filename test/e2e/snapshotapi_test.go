package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1beta1 "sigs.k8s.io/gateway-api/apis/v1beta1"
	gatewayclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"

	"github.com/crossns/external-provisioner/test/cluster"
)

// A cluster without the snapshot CRDs: a claim restoring a snapshot is told
// that the VolumeSnapshot API is missing, everyone else goes on provisioning,
// and once an admin installs the CRDs restores work without restarting the
// sidecar.
func TestSnapshotClaimWithoutSnapshotAPIDoesNotStopProvisioning(t *testing.T) {
	c := requireBed(t)
	ctx := testContext(t)
	ns := createNamespace(t, c, "snapapi")
	// Registered after the namespace, so it runs before the namespace is
	// deleted: the bed gets its CRDs and a running sidecar back even when
	// the test fails half-way.
	t.Cleanup(func() { restoreSnapshotAPI(t, c) })

	if err := bed.DeleteSnapshotCRDs(ctx); err != nil {
		t.Fatalf("deleting the snapshot CRDs: %v", err)
	}
	sidecarLog := startSidecarLog(t)
	pid := sidecarPID(t)

	waiting := createClaim(t, c, fromSnapshot(newClaim(ns, "restore-early", "1Mi"), "", "nightly"))
	var msg string
	eventually(t, provisionWait, "a ProvisioningFailed event on the claim", func(ctx context.Context) (bool, string, error) {
		if err := sidecarHealth(sidecarLog, pid); err != nil {
			return false, "", err
		}
		evs, err := claimEvents(ctx, c, ns, waiting.Name)
		if err != nil {
			return false, err.Error(), nil
		}
		for _, e := range evs {
			if e.Reason == "ProvisioningFailed" {
				msg = e.Message
				return true, "", nil
			}
		}
		return false, eventSummary(ctx, c, ns, waiting.Name), nil
	})
	for _, want := range []string{"the VolumeSnapshot API (snapshot.storage.k8s.io/v1) is not served", "install the snapshot CRDs"} {
		if !strings.Contains(msg, want) {
			t.Errorf("ProvisioningFailed event %q does not say %q", msg, want)
		}
	}
	requireNoCreateVolume(t, waiting)

	// Everyone else provisions meanwhile.
	files := map[string]string{"data": "restored without a restart"}
	provisionSource(t, c, ns, "db", files)
	requireSidecarHealthy(t, sidecarLog, pid)

	// The admin installs the CRDs (snapshot-controller and csi-snapshotter
	// pick them up by themselves); a snapshot is taken and restored.
	if err := bed.InstallSnapshotAPI(ctx); err != nil {
		t.Fatalf("re-installing the snapshot CRDs: %v", err)
	}
	snapshotOf(t, c, ns, "nightly", "db")
	createClaim(t, c, fromSnapshot(newClaim(ns, "restore", "1Mi"), "", "nightly"))
	pv := waitBound(t, c, ns, "restore")
	requireFiles(t, volumeDir(pv), files)
	requireSidecarHealthy(t, sidecarLog, pid)
}

// A restart in a cluster with many grants tells no waiting claim that grants
// are unavailable: work waits until the grant cache has synced (listing a
// thousand grants takes longer than listing claims).
func TestSidecarRestartDoesNotReportGrantsUnavailable(t *testing.T) {
	c := requireBed(t)
	prod := createNamespace(t, c, "prod")
	dev := createNamespace(t, c, "dev")
	createGrants(t, prod, 1000)
	// Cross-namespace claims that wait for a grant, so that the restarted
	// sidecar takes grant decisions at once.
	const waiting = 10
	for i := range waiting {
		createClaim(t, c, fromClaim(newClaim(dev, fmt.Sprintf("copy-%d", i), "1Mi"), prod, "db"))
	}
	for i := range waiting {
		waitEvent(t, c, dev, fmt.Sprintf("copy-%d", i), "ReferenceGrantMissing")
	}

	sidecarLog := startSidecarLog(t)
	eventually(t, provisionWait, "the restarted sidecar to decide every claim again", func(ctx context.Context) (bool, string, error) {
		log := sidecarLog()
		for i := range waiting {
			decided := fmt.Sprintf(`object="%s/copy-%d"`, dev, i)
			if !strings.Contains(linesWith(log, decided), `reason="ReferenceGrantMissing"`) {
				return false, fmt.Sprintf("no ReferenceGrantMissing event for %s logged", decided), nil
			}
		}
		return true, "", nil
	})
	for i := range waiting {
		name := fmt.Sprintf("copy-%d", i)
		if got := eventNames(t, c, dev, name, "ReferenceGrantsUnavailable"); len(got) > 0 {
			t.Errorf("claim %s got ReferenceGrantsUnavailable on a normal start; events: %s", name, eventSummary(testContext(t), c, dev, name))
		}
	}
	if log := sidecarLog(); strings.Contains(log, "ReferenceGrantsUnavailable") {
		t.Errorf("sidecar log of a normal start mentions ReferenceGrantsUnavailable:\n%s", linesWith(log, "ReferenceGrantsUnavailable"))
	}
}

// createGrants creates n ReferenceGrants in ns that allow nothing the test
// uses (PVCs from other namespaces), with a client of its own budget.
func createGrants(t *testing.T, ns string, n int) {
	t.Helper()
	cfg := bed.RESTConfig()
	cfg.QPS, cfg.Burst = 500, 500
	client, err := gatewayclient.NewForConfig(cfg)
	if err != nil {
		t.Fatalf("gateway-api client: %v", err)
	}
	ctx := testContext(t)
	for i := range n {
		g := &gatewayv1beta1.ReferenceGrant{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("other-%d", i), Namespace: ns},
			Spec: gatewayv1beta1.ReferenceGrantSpec{
				From: []gatewayv1beta1.ReferenceGrantFrom{{Group: "", Kind: "PersistentVolumeClaim", Namespace: gatewayv1beta1.Namespace(fmt.Sprintf("tenant-%d", i))}},
				To:   []gatewayv1beta1.ReferenceGrantTo{{Group: "", Kind: "PersistentVolumeClaim"}},
			},
		}
		if _, err := client.GatewayV1beta1().ReferenceGrants(ns).Create(ctx, g, metav1.CreateOptions{}); err != nil {
			t.Fatalf("creating ReferenceGrant %s/%s: %v", ns, g.Name, err)
		}
	}
}

// startSidecarLog restarts the sidecar with its usual flags and returns a
// function that reads the log of its last start: the bed appends each start
// to one file, after a line "==== <time> starting ...".
func startSidecarLog(t *testing.T) func() string {
	t.Helper()
	if err := bed.RestartProvisioner(testContext(t)); err != nil {
		t.Fatalf("restarting the sidecar: %v", err)
	}
	return func() string { return sidecarLogSinceStart(t) }
}

// sidecarPID is the PID of the running sidecar.
func sidecarPID(t *testing.T) int {
	t.Helper()
	for _, st := range bed.Status() {
		if st.Name == cluster.Provisioner {
			if !st.Alive {
				t.Fatalf("the sidecar is not running; see %s", st.Log)
			}
			return st.PID
		}
	}
	t.Fatal("the bed has no sidecar")
	return 0
}

// requireSidecarHealthy fails the test unless the sidecar started with pid
// still runs and has not panicked.
func requireSidecarHealthy(t *testing.T, log func() string, pid int) {
	t.Helper()
	if err := sidecarHealth(log, pid); err != nil {
		t.Fatal(err)
	}
}

// sidecarHealth says whether the sidecar started with pid panicked (its log
// since the start shows it), exited or was restarted.
func sidecarHealth(log func() string, pid int) error {
	if l := log(); strings.Contains(l, "panic") {
		return fmt.Errorf("the sidecar panicked:\n%s", linesWith(l, "panic"))
	}
	for _, st := range bed.Status() {
		if st.Name == cluster.Provisioner && (!st.Alive || st.PID != pid) {
			return fmt.Errorf("the sidecar started as pid %d is gone (now pid %d, running %v)", pid, st.PID, st.Alive)
		}
	}
	return nil
}

// restoreSnapshotAPI puts the snapshot CRDs back if they are missing and
// restarts the sidecar with its usual flags.
func restoreSnapshotAPI(t *testing.T, c *clients) {
	ctx := context.Background()
	for _, name := range cluster.SnapshotCRDNames() {
		if _, err := c.apiextensions.ApiextensionsV1().CustomResourceDefinitions().Get(ctx, name, metav1.GetOptions{}); err != nil {
			if err := bed.InstallSnapshotAPI(ctx); err != nil {
				t.Errorf("restoring the snapshot CRDs: %v", err)
			}
			break
		}
	}
	// A sidecar that crashed, or ran without the CRDs, is replaced.
	if err := bed.RestartProvisioner(ctx); err != nil {
		t.Errorf("restoring the sidecar: %v", err)
	}
}

// eventNames lists the names of the Events with reason on an object.
func eventNames(t *testing.T, c *clients, ns, name, reason string) []string {
	t.Helper()
	evs, err := claimEvents(testContext(t), c, ns, name)
	if err != nil {
		t.Fatalf("listing events of %s/%s: %v", ns, name, err)
	}
	var names []string
	for _, e := range evs {
		if e.Reason == reason {
			names = append(names, e.Name)
		}
	}
	return names
}

// linesWith returns the lines of text that contain s.
func linesWith(text, s string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, s) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
