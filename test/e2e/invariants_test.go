package e2e

// The invariants every e2e test must leave the shared bed in, checked at the
// end of each test (requireBed registers the check); the checks themselves
// are test/invariants':
//
//   - the driver's backend volumes are exactly the volume handles of the
//     driver's PVs: none leaked (in the backend, no PV) and none lost (a PV
//     whose backend volume is gone, unless the PV is on its way out);
//   - the driver's backend snapshots are exactly the snapshot handles of the
//     driver's VolumeSnapshotContents;
//   - nothing the test made is left Terminating or undeleted: no claim or
//     VolumeSnapshot in its namespaces, no PV or VolumeSnapshotContent of a
//     claim or snapshot of its namespaces whose reclaim or deletion policy
//     is Delete.
//
// Tests share one bed, and the smoke tests run in parallel. A finding is this
// test's when it was not already there when the test started; a finding that
// belongs to another test still running is left to that test's own check.
// The ledger attributes backend objects to tests: it watches claims and
// snapshots to resolve the UIDs in backend names, and it knows which test
// made which namespace and which volume created directly on the driver
// (createDriverVolume).

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	snapshotclient "github.com/kubernetes-csi/external-snapshotter/client/v8/clientset/versioned"
	"k8s.io/client-go/kubernetes"

	"github.com/crossns/external-provisioner/test/invariants"
)

// settleWait bounds how long the check waits for the bed to settle after a
// test's own cleanup: deleting a released PV's volume takes about a second.
const settleWait = 60 * time.Second

// ledger attributes objects on the bed to the tests that made them.
var ledger = &bedLedger{Ledger: invariants.NewLedger(), running: map[string]bool{}}

type bedLedger struct {
	*invariants.Ledger
	// watching starts the claim and snapshot watches once per test binary.
	watching sync.Once
	watchErr error
	// clients are the check's own, with a budget for polling several lists
	// four times a second without client-side throttling.
	clients invariants.Clients

	mu sync.Mutex
	// running holds the tests whose invariant check has not finished.
	running map[string]bool
}

// watch records the UIDs of all claims and VolumeSnapshots from now on, and
// returns the clients of the check.
func (l *bedLedger) watch() (invariants.Clients, error) {
	l.watching.Do(func() {
		cfg := bed.RESTConfig()
		cfg.QPS, cfg.Burst = 50, 100
		c := invariants.Clients{}
		if c.Kube, l.watchErr = kubernetes.NewForConfig(cfg); l.watchErr != nil {
			return
		}
		if c.Snapshots, l.watchErr = snapshotclient.NewForConfig(cfg); l.watchErr != nil {
			return
		}
		l.clients = c
		// Never stopped: the watches serve every test of the binary.
		l.watchErr = l.Watch(c.Kube, c.Snapshots, make(chan struct{}), objectWait)
	})
	return l.clients, l.watchErr
}

// addNamespace records that test made namespace ns.
func (l *bedLedger) addNamespace(ns, test string) { l.AddNamespace(ns, test) }

// addDriverVolume records that test created the volume name on the driver.
func (l *bedLedger) addDriverVolume(name, test string) { l.AddDriverVolume(name, test) }

func (l *bedLedger) setRunning(test string, running bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if running {
		l.running[test] = true
	} else {
		delete(l.running, test)
	}
}

// otherRunning reports whether o is a test other than self still running.
func (l *bedLedger) otherRunning(o invariants.Owner, self string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return o.Who != "" && o.Who != self && l.running[o.Who]
}

// survey reads the bed; ns are the namespaces whose own objects are read too.
func survey(ctx context.Context, c invariants.Clients, ns []string) (*invariants.State, error) {
	return invariants.Survey(ctx, c, bed.DriverDataDir(), driverName, ns)
}

// backendFindings compares the driver's backend with the PVs and
// VolumeSnapshotContents of the driver, attributed by the ledger.
func backendFindings(s *invariants.State) []invariants.Finding {
	return invariants.BackendFindings(s, ledger)
}

// checkInvariantsAtEnd registers the invariant check to run once the test
// and all the cleanups it registers later are done (cleanups run last in,
// first out). Findings already there when the test started are logged as
// inherited; new ones fail the test, unless they belong to another test
// that still runs (a parallel one), which checks them itself.
func checkInvariantsAtEnd(t *testing.T) {
	t.Helper()
	c, err := ledger.watch()
	if err != nil {
		t.Fatalf("bed invariants: %v", err)
	}
	test := t.Name()
	ledger.setRunning(test, true)
	before := map[string]bool{}
	ctx, cancel := context.WithTimeout(context.Background(), objectWait)
	defer cancel()
	s, err := survey(ctx, c, nil)
	if err != nil {
		t.Fatalf("bed invariants: surveying the bed before the test: %v", err)
	}
	for _, f := range backendFindings(s) {
		before[f.Key] = true
	}
	t.Cleanup(func() {
		defer ledger.setRunning(test, false)
		var inherited []invariants.Finding
		defer func() {
			for _, f := range inherited {
				t.Logf("bed invariants: already broken before this test started: %s", f)
			}
		}()
		ns := ledger.NamespacesOf(test)
		// A survey cut short by the deadline must not hide the findings
		// of the one before.
		last := "no survey finished"
		eventually(t, settleWait, fmt.Sprintf("the bed's invariants after %s (its namespaces %v)", test, ns), func(ctx context.Context) (bool, string, error) {
			s, err := survey(ctx, c, ns)
			if err != nil {
				return false, last + " (then: " + err.Error() + ")", nil
			}
			inherited = nil
			var mine []string
			for _, f := range append(backendFindings(s), invariants.LeftoverFindings(s, test, ns)...) {
				switch {
				case ledger.otherRunning(f.Owner, test):
				case before[f.Key] && f.Owner.Who != test:
					inherited = append(inherited, f)
				default:
					mine = append(mine, f.String())
				}
			}
			last = "\n\t" + strings.Join(mine, "\n\t")
			return len(mine) == 0, last, nil
		})
	})
}
