package e2e

// The invariants every e2e test must leave the shared bed in, checked at the
// end of each test (requireBed registers the check):
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
// The ledger attributes backend objects to tests: the sidecar names volumes
// pvc-<claim UID> and csi-snapshotter names snapshots snapshot-<VolumeSnapshot
// UID>, the ledger watches claims and snapshots to resolve those UIDs, and it
// knows which test made which namespace and which volume created directly on
// the driver (createDriverVolume).

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	snapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	snapshotclient "github.com/kubernetes-csi/external-snapshotter/client/v8/clientset/versioned"
	snapshotinformers "github.com/kubernetes-csi/external-snapshotter/client/v8/informers/externalversions"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"

	"github.com/crossns/external-provisioner/test/csidriver"
)

// settleWait bounds how long the check waits for the bed to settle after a
// test's own cleanup: deleting a released PV's volume takes about a second.
const settleWait = 60 * time.Second

// ledger attributes objects on the bed to the tests that made them.
var ledger = &bedLedger{
	testOfNamespace: map[string]string{},
	testOfVolume:    map[string]string{},
	objectOfUID:     map[string]string{},
	running:         map[string]bool{},
}

type bedLedger struct {
	// watching starts the claim and snapshot watches once per test binary.
	watching sync.Once
	watchErr error
	// clients are the check's own, with a budget for polling several lists
	// four times a second without client-side throttling.
	clients *clients

	mu sync.Mutex
	// testOfNamespace is the test that created each namespace.
	testOfNamespace map[string]string
	// testOfVolume is the test that created each volume (by name) directly
	// on the driver.
	testOfVolume map[string]string
	// objectOfUID describes every claim and VolumeSnapshot seen, by UID, as
	// "claim ns/name" or "VolumeSnapshot ns/name"; never forgotten, so a
	// leak is attributed after its claim is gone.
	objectOfUID map[string]string
	// running holds the tests whose invariant check has not finished.
	running map[string]bool
}

// watch records the UIDs of all claims and VolumeSnapshots from now on, and
// returns the clients of the check.
func (l *bedLedger) watch() (*clients, error) {
	l.watching.Do(func() {
		cfg := bed.RESTConfig()
		cfg.QPS, cfg.Burst = 50, 100
		c := &clients{}
		if c.kube, l.watchErr = kubernetes.NewForConfig(cfg); l.watchErr != nil {
			return
		}
		if c.snapshots, l.watchErr = snapshotclient.NewForConfig(cfg); l.watchErr != nil {
			return
		}
		l.clients = c
		// Never stopped: the watches serve every test of the binary.
		stop := make(chan struct{})
		kubeInf := informers.NewSharedInformerFactory(c.kube, 0)
		snapInf := snapshotinformers.NewSharedInformerFactory(c.snapshots, 0)
		record := func(kind string) cache.ResourceEventHandler {
			add := func(obj any) {
				if m, err := metaOf(obj); err == nil {
					l.mu.Lock()
					l.objectOfUID[string(m.GetUID())] = fmt.Sprintf("%s %s/%s", kind, m.GetNamespace(), m.GetName())
					l.mu.Unlock()
				}
			}
			return cache.ResourceEventHandlerFuncs{AddFunc: add, UpdateFunc: func(_, obj any) { add(obj) }}
		}
		claims := kubeInf.Core().V1().PersistentVolumeClaims().Informer()
		snaps := snapInf.Snapshot().V1().VolumeSnapshots().Informer()
		if _, err := claims.AddEventHandler(record("claim")); err != nil {
			l.watchErr = err
			return
		}
		if _, err := snaps.AddEventHandler(record("VolumeSnapshot")); err != nil {
			l.watchErr = err
			return
		}
		kubeInf.Start(stop)
		snapInf.Start(stop)
		ctx, cancel := context.WithTimeout(context.Background(), objectWait)
		defer cancel()
		if !cache.WaitForCacheSync(ctx.Done(), claims.HasSynced, snaps.HasSynced) {
			l.watchErr = fmt.Errorf("claim and VolumeSnapshot watches did not sync within %s", objectWait)
		}
	})
	return l.clients, l.watchErr
}

func metaOf(obj any) (metav1.Object, error) {
	if m, ok := obj.(metav1.Object); ok {
		return m, nil
	}
	return nil, fmt.Errorf("%T has no object metadata", obj)
}

// addNamespace records that test made namespace ns.
func (l *bedLedger) addNamespace(ns, test string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.testOfNamespace[ns] = test
}

// addDriverVolume records that test created the volume name on the driver.
func (l *bedLedger) addDriverVolume(name, test string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.testOfVolume[name] = test
}

func (l *bedLedger) setRunning(test string, running bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if running {
		l.running[test] = true
	} else {
		delete(l.running, test)
	}
}

// namespacesOf returns the namespaces test made, sorted.
func (l *bedLedger) namespacesOf(test string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for ns, owner := range l.testOfNamespace {
		if owner == test {
			out = append(out, ns)
		}
	}
	slices.Sort(out)
	return out
}

// owner is who a finding most likely belongs to.
type owner struct {
	test string // "" when unknown
	what string // e.g. `claim dev/copy`, for the message
}

func (o owner) String() string {
	switch {
	case o.test == "" && o.what == "":
		return "likely owner unknown (no test's claim, snapshot or driver volume has this name)"
	case o.test == "":
		return "likely owner: " + o.what + " (of no test of this run)"
	case o.what == "":
		return "likely owner: " + o.test
	}
	return "likely owner: " + o.what + " of " + o.test
}

// ownerOfNamespace attributes an object in namespace ns.
func (l *bedLedger) ownerOfNamespace(ns, what string) owner {
	l.mu.Lock()
	defer l.mu.Unlock()
	return owner{test: l.testOfNamespace[ns], what: what}
}

// ownerOfName attributes a backend object by the name it was created with:
// a volume made directly on the driver, or <prefix>-<UID> of a claim or
// VolumeSnapshot the ledger has seen.
func (l *bedLedger) ownerOfName(name string) owner {
	l.mu.Lock()
	defer l.mu.Unlock()
	if test, ok := l.testOfVolume[name]; ok {
		return owner{test: test, what: fmt.Sprintf("volume %q created directly on the driver", name)}
	}
	_, uid, ok := strings.Cut(name, "-")
	if !ok {
		return owner{}
	}
	obj, ok := l.objectOfUID[uid]
	if !ok {
		return owner{}
	}
	_, nsName, _ := strings.Cut(obj, " ")
	ns, _, _ := strings.Cut(nsName, "/")
	return owner{test: l.testOfNamespace[ns], what: obj}
}

// othersRunning reports whether o is a test other than self still running.
func (l *bedLedger) otherRunning(o owner, self string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return o.test != "" && o.test != self && l.running[o.test]
}

// finding is one broken invariant.
type finding struct {
	// key identifies the finding across surveys of one test.
	key   string
	msg   string
	owner owner
}

func (f finding) String() string { return f.msg + "; " + f.owner.String() }

// bedState is what one survey read.
type bedState struct {
	volumes   []csidriver.Volume
	snapshots []csidriver.Snapshot
	pvs       []corev1.PersistentVolume
	contents  []snapshotv1.VolumeSnapshotContent
	// Objects of the surveyed test's namespaces.
	claims     []corev1.PersistentVolumeClaim
	volSnaps   []snapshotv1.VolumeSnapshot
	namespaces []corev1.Namespace
	// noSnapshotAPI: the snapshot CRDs were not installed, so backend
	// snapshots cannot be compared.
	noSnapshotAPI bool
}

// survey reads the backend and the API objects the invariants are about;
// ns are the namespaces whose own objects are read too.
func survey(ctx context.Context, c *clients, ns []string) (*bedState, error) {
	s := &bedState{}
	var err error
	if s.volumes, s.snapshots, err = csidriver.ReadDataDir(bed.DriverDataDir()); err != nil {
		return nil, fmt.Errorf("reading the driver's data dir: %w", err)
	}
	pvs, err := c.kube.CoreV1().PersistentVolumes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("listing PVs: %w", err)
	}
	for _, pv := range pvs.Items {
		if pv.Spec.CSI != nil && pv.Spec.CSI.Driver == driverName {
			s.pvs = append(s.pvs, pv)
		}
	}
	// A test may have removed the snapshot CRDs (and installs them again
	// at its end): then there are no snapshot objects to compare.
	contents, err := c.snapshots.SnapshotV1().VolumeSnapshotContents().List(ctx, metav1.ListOptions{})
	if apierrors.IsNotFound(err) {
		contents, err = &snapshotv1.VolumeSnapshotContentList{}, nil
		s.noSnapshotAPI = true
	}
	if err != nil {
		return nil, fmt.Errorf("listing VolumeSnapshotContents: %w", err)
	}
	for _, vsc := range contents.Items {
		if vsc.Spec.Driver == driverName {
			s.contents = append(s.contents, vsc)
		}
	}
	for _, n := range ns {
		got, err := c.kube.CoreV1().Namespaces().Get(ctx, n, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("reading namespace %s: %w", n, err)
		}
		s.namespaces = append(s.namespaces, *got)
		claims, err := c.kube.CoreV1().PersistentVolumeClaims(n).List(ctx, metav1.ListOptions{})
		if err != nil {
			return nil, fmt.Errorf("listing claims in %s: %w", n, err)
		}
		s.claims = append(s.claims, claims.Items...)
		snaps, err := c.snapshots.SnapshotV1().VolumeSnapshots(n).List(ctx, metav1.ListOptions{})
		if apierrors.IsNotFound(err) {
			snaps, err = &snapshotv1.VolumeSnapshotList{}, nil
		}
		if err != nil {
			return nil, fmt.Errorf("listing VolumeSnapshots in %s: %w", n, err)
		}
		s.volSnaps = append(s.volSnaps, snaps.Items...)
	}
	return s, nil
}

// backendFindings compares the driver's backend with the PVs and
// VolumeSnapshotContents of the driver.
func backendFindings(s *bedState) []finding {
	var out []finding
	pvOfHandle := map[string]*corev1.PersistentVolume{}
	for i := range s.pvs {
		pvOfHandle[s.pvs[i].Spec.CSI.VolumeHandle] = &s.pvs[i]
	}
	backendVolume := map[string]bool{}
	for _, v := range s.volumes {
		backendVolume[v.ID] = true
		if pvOfHandle[v.ID] == nil {
			out = append(out, finding{
				key:   "leaked volume " + v.ID,
				msg:   fmt.Sprintf("leaked volume %s (name %q, created %s): in the driver's backend, but no PV has this handle", v.ID, v.Name, v.CreationTime.Format(time.RFC3339)),
				owner: ledger.ownerOfName(v.Name),
			})
		}
	}
	for _, pv := range s.pvs {
		h := pv.Spec.CSI.VolumeHandle
		if backendVolume[h] || pv.DeletionTimestamp != nil ||
			(pv.Status.Phase == corev1.VolumeReleased && pv.Spec.PersistentVolumeReclaimPolicy == corev1.PersistentVolumeReclaimDelete) {
			continue
		}
		o := owner{what: "PV " + pv.Name}
		if ref := pv.Spec.ClaimRef; ref != nil {
			o = ledger.ownerOfNamespace(ref.Namespace, fmt.Sprintf("claim %s/%s", ref.Namespace, ref.Name))
		}
		out = append(out, finding{
			key:   "lost volume " + pv.Name,
			msg:   fmt.Sprintf("lost volume %s: PV %s (%s, reclaim %s%s) has it as handle, but the driver's backend has no such volume", h, pv.Name, pv.Status.Phase, pv.Spec.PersistentVolumeReclaimPolicy, claimOf(pv.Spec.ClaimRef)),
			owner: o,
		})
	}

	if s.noSnapshotAPI {
		return out
	}
	contentOfHandle := map[string]*snapshotv1.VolumeSnapshotContent{}
	for i := range s.contents {
		for _, h := range contentHandles(&s.contents[i]) {
			contentOfHandle[h] = &s.contents[i]
		}
	}
	backendSnapshot := map[string]bool{}
	for _, sn := range s.snapshots {
		backendSnapshot[sn.ID] = true
		if contentOfHandle[sn.ID] != nil {
			continue
		}
		o := ledger.ownerOfName(sn.Name)
		if o.test == "" && o.what == "" {
			o = ledger.ownerOfName(volumeName(s, sn.SourceVolumeID))
		}
		out = append(out, finding{
			key:   "leaked snapshot " + sn.ID,
			msg:   fmt.Sprintf("leaked snapshot %s (name %q, of volume %s): in the driver's backend, but no VolumeSnapshotContent has this handle", sn.ID, sn.Name, sn.SourceVolumeID),
			owner: o,
		})
	}
	for _, vsc := range s.contents {
		h := ptr.Deref(statusHandle(&vsc), "")
		if h == "" || backendSnapshot[h] || vsc.DeletionTimestamp != nil {
			continue
		}
		ref := vsc.Spec.VolumeSnapshotRef
		out = append(out, finding{
			key:   "lost snapshot " + vsc.Name,
			msg:   fmt.Sprintf("lost snapshot %s: VolumeSnapshotContent %s (of VolumeSnapshot %s/%s) has it as snapshotHandle, but the driver's backend has no such snapshot", h, vsc.Name, ref.Namespace, ref.Name),
			owner: ledger.ownerOfNamespace(ref.Namespace, fmt.Sprintf("VolumeSnapshot %s/%s", ref.Namespace, ref.Name)),
		})
	}
	return out
}

func claimOf(ref *corev1.ObjectReference) string {
	if ref == nil {
		return ""
	}
	return fmt.Sprintf(", claim %s/%s", ref.Namespace, ref.Name)
}

func statusHandle(vsc *snapshotv1.VolumeSnapshotContent) *string {
	if vsc.Status == nil {
		return nil
	}
	return vsc.Status.SnapshotHandle
}

// contentHandles are the backend snapshots a VolumeSnapshotContent stands
// for: its status handle, and the handle a pre-provisioned one names.
func contentHandles(vsc *snapshotv1.VolumeSnapshotContent) []string {
	var out []string
	if h := ptr.Deref(statusHandle(vsc), ""); h != "" {
		out = append(out, h)
	}
	if h := ptr.Deref(vsc.Spec.Source.SnapshotHandle, ""); h != "" {
		out = append(out, h)
	}
	return out
}

func volumeName(s *bedState, id string) string {
	for _, v := range s.volumes {
		if v.ID == id {
			return v.Name
		}
	}
	return ""
}

// leftoverFindings lists what the test's own cleanup should have removed:
// objects of its namespaces left Terminating, and PVs and
// VolumeSnapshotContents of its deleted claims and snapshots that were to be
// deleted with them.
func leftoverFindings(s *bedState, test string, ns []string) []finding {
	var out []finding
	mine := func(namespace string) bool { return slices.Contains(ns, namespace) }
	own := func(what string) owner { return owner{test: test, what: what} }
	for _, n := range s.namespaces {
		if n.DeletionTimestamp != nil {
			out = append(out, finding{
				key:   "terminating namespace " + n.Name,
				msg:   fmt.Sprintf("namespace %s left Terminating (conditions: %s)", n.Name, namespaceConditions(&n)),
				owner: own("namespace " + n.Name),
			})
		}
	}
	claimUIDs := map[string]bool{}
	for _, pvc := range s.claims {
		claimUIDs[string(pvc.UID)] = true
		if pvc.DeletionTimestamp != nil {
			what := fmt.Sprintf("claim %s/%s", pvc.Namespace, pvc.Name)
			out = append(out, finding{
				key:   "terminating " + what,
				msg:   fmt.Sprintf("%s left Terminating since %s (phase %s, volume %q, finalizers %v)", what, pvc.DeletionTimestamp.Format(time.RFC3339), pvc.Status.Phase, pvc.Spec.VolumeName, pvc.Finalizers),
				owner: own(what),
			})
		}
	}
	for _, vs := range s.volSnaps {
		if vs.DeletionTimestamp != nil {
			what := fmt.Sprintf("VolumeSnapshot %s/%s", vs.Namespace, vs.Name)
			out = append(out, finding{
				key:   "terminating " + what,
				msg:   fmt.Sprintf("%s left Terminating since %s (finalizers %v)", what, vs.DeletionTimestamp.Format(time.RFC3339), vs.Finalizers),
				owner: own(what),
			})
		}
	}
	for _, pv := range s.pvs {
		ref := pv.Spec.ClaimRef
		if ref == nil || !mine(ref.Namespace) {
			continue
		}
		what := fmt.Sprintf("claim %s/%s", ref.Namespace, ref.Name)
		switch {
		case pv.DeletionTimestamp != nil:
			out = append(out, finding{
				key:   "terminating PV " + pv.Name,
				msg:   fmt.Sprintf("PV %s (handle %s) of %s left Terminating since %s (phase %s, finalizers %v)", pv.Name, pv.Spec.CSI.VolumeHandle, what, pv.DeletionTimestamp.Format(time.RFC3339), pv.Status.Phase, pv.Finalizers),
				owner: own(what),
			})
		case !claimUIDs[string(ref.UID)] && pv.Spec.PersistentVolumeReclaimPolicy == corev1.PersistentVolumeReclaimDelete:
			out = append(out, finding{
				key:   "undeleted PV " + pv.Name,
				msg:   fmt.Sprintf("PV %s (handle %s) of deleted %s not deleted (phase %s, reclaim Delete, finalizers %v)", pv.Name, pv.Spec.CSI.VolumeHandle, what, pv.Status.Phase, pv.Finalizers),
				owner: own(what),
			})
		}
	}
	snapUIDs := map[string]bool{}
	for _, vs := range s.volSnaps {
		snapUIDs[string(vs.UID)] = true
	}
	for _, vsc := range s.contents {
		ref := vsc.Spec.VolumeSnapshotRef
		if !mine(ref.Namespace) {
			continue
		}
		what := fmt.Sprintf("VolumeSnapshot %s/%s", ref.Namespace, ref.Name)
		handle := ptr.Deref(statusHandle(&vsc), "")
		switch {
		case vsc.DeletionTimestamp != nil:
			out = append(out, finding{
				key:   "terminating VolumeSnapshotContent " + vsc.Name,
				msg:   fmt.Sprintf("VolumeSnapshotContent %s (handle %q) of %s left Terminating since %s (finalizers %v)", vsc.Name, handle, what, vsc.DeletionTimestamp.Format(time.RFC3339), vsc.Finalizers),
				owner: own(what),
			})
		case !snapUIDs[string(ref.UID)] && vsc.Spec.DeletionPolicy == snapshotv1.VolumeSnapshotContentDelete:
			out = append(out, finding{
				key:   "undeleted VolumeSnapshotContent " + vsc.Name,
				msg:   fmt.Sprintf("VolumeSnapshotContent %s (handle %q) of deleted %s not deleted (deletionPolicy Delete, finalizers %v)", vsc.Name, handle, what, vsc.Finalizers),
				owner: own(what),
			})
		}
	}
	return out
}

func namespaceConditions(n *corev1.Namespace) string {
	var parts []string
	for _, c := range n.Status.Conditions {
		if c.Status == corev1.ConditionTrue {
			parts = append(parts, fmt.Sprintf("%s: %s", c.Type, c.Message))
		}
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, "; ")
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
		before[f.key] = true
	}
	t.Cleanup(func() {
		defer ledger.setRunning(test, false)
		var inherited []finding
		defer func() {
			for _, f := range inherited {
				t.Logf("bed invariants: already broken before this test started: %s", f)
			}
		}()
		ns := ledger.namespacesOf(test)
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
			for _, f := range append(backendFindings(s), leftoverFindings(s, test, ns)...) {
				switch {
				case ledger.otherRunning(f.owner, test):
				case before[f.key] && f.owner.test != test:
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
