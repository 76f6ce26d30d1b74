package soak

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash/fnv"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	snapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	snapclient "github.com/kubernetes-csi/external-snapshotter/client/v8/clientset/versioned"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"
	"k8s.io/utils/ptr"
	gatewayv1beta1 "sigs.k8s.io/gateway-api/apis/v1beta1"
	gatewayclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"

	"github.com/crossns/external-provisioner/test/cluster"
	"github.com/crossns/external-provisioner/test/invariants"
)

// who is the owner the run's objects are attributed to in findings.
const who = "soak"

// runLabel marks the run's namespaces, so a later run removes what an
// interrupted one left.
const runLabel = "soak.crossns.io/run"

// canaryNamespace holds the recovery probes' claims and snapshots.
const canaryNamespace = "soak-canary"

// claimSize is the size of every claim; the source files are far smaller.
const claimSize = "1Mi"

// world is what the run made on the bed and knows about it: claims, sources,
// the timeline of every grant. The checks compare the bed with it.
type world struct {
	cfg     Config
	kube    kubernetes.Interface
	snaps   snapclient.Interface
	gateway gatewayclient.Interface
	bed     *bedControl
	dataDir string
	ledger  *invariants.Ledger

	mu sync.Mutex
	// claims by namespace/name, and by the volume name the sidecar gives
	// them (pvc-<UID>).
	claims   map[string]*claimRec
	byVolume map[string]*claimRec
	sources  map[SourceRef]*sourceRec
	grants   map[Pair]*grantRec
	// opErrors are workload steps that could not be done (a source that
	// never bound, say); they are reported, not invariant violations.
	opErrors []string
}

type claimRec struct {
	spec    ClaimSpec
	uid     types.UID
	created time.Time
	// deleted is when the run asked for the claim's deletion.
	deleted time.Time
	canary  bool
	// checked: its data was compared with its source once it was Bound.
	checked bool
}

func (c *claimRec) key() string { return c.spec.Namespace + "/" + c.spec.Name }

type sourceRec struct {
	ref SourceRef
	// sum is the checksum of its files.
	sum string
	// deleted: the run deleted it.
	deleted bool
}

type grantRec struct {
	mu      sync.Mutex
	exists  bool
	windows []invariants.GrantWindow
}

func newWorld(cfg Config, restConfig *rest.Config, bed *bedControl, dataDir string) (*world, error) {
	rc := rest.CopyConfig(restConfig)
	// The run's own requests are never what is measured.
	rc.QPS, rc.Burst = 500, 1000
	w := &world{
		cfg: cfg, bed: bed, dataDir: dataDir, ledger: invariants.NewLedger(),
		claims: map[string]*claimRec{}, byVolume: map[string]*claimRec{},
		sources: map[SourceRef]*sourceRec{}, grants: map[Pair]*grantRec{},
	}
	var err error
	if w.kube, err = kubernetes.NewForConfig(rc); err != nil {
		return nil, err
	}
	if w.snaps, err = snapclient.NewForConfig(rc); err != nil {
		return nil, err
	}
	if w.gateway, err = gatewayclient.NewForConfig(rc); err != nil {
		return nil, err
	}
	return w, nil
}

func (w *world) opError(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	w.mu.Lock()
	w.opErrors = append(w.opErrors, msg)
	w.mu.Unlock()
	klog.Background().Info("Workload step failed", "error", msg)
}

// retry calls f until it succeeds or answers for good (exists, not found,
// invalid), for up to timeout: kube-apiserver may be down (a fault).
func retry(ctx context.Context, timeout time.Duration, f func(ctx context.Context) error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := f(ctx)
		if err == nil || apierrors.IsAlreadyExists(err) || apierrors.IsNotFound(err) || apierrors.IsInvalid(err) || apierrors.IsForbidden(err) {
			return err
		}
		if time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// poll calls cond every interval until it holds, for up to timeout; it
// returns the last state cond described.
func poll(ctx context.Context, interval, timeout time.Duration, cond func(ctx context.Context) (bool, string)) (string, error) {
	deadline := time.Now().Add(timeout)
	for {
		ok, state := cond(ctx)
		if ok {
			return state, nil
		}
		if time.Now().After(deadline) {
			return state, fmt.Errorf("not within %s (last: %s)", timeout, state)
		}
		select {
		case <-ctx.Done():
			return state, ctx.Err()
		case <-time.After(interval):
		}
	}
}

// createNamespaces makes the run's namespaces, labelled with the seed.
func (w *world) createNamespaces(ctx context.Context, names []string) error {
	for _, n := range names {
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: n, Labels: map[string]string{runLabel: fmt.Sprint(w.cfg.Seed)}}}
		err := retry(ctx, time.Minute, func(ctx context.Context) error {
			_, err := w.kube.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{})
			return err
		})
		if err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("creating namespace %s: %w", n, err)
		}
		w.ledger.AddNamespace(n, who)
	}
	return nil
}

// newClaim builds a claim of the bed's class.
func newClaim(spec ClaimSpec) *corev1.PersistentVolumeClaim {
	pvc := &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: spec.Name, Namespace: spec.Namespace},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes:      []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			StorageClassName: ptr.To(cluster.StorageClassName),
			Resources:        corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse(claimSize)}},
		},
	}
	if src := spec.Source; src != nil {
		ref := &corev1.TypedObjectReference{Kind: src.Kind, Name: src.Name}
		if src.Kind == KindSnapshot {
			ref.APIGroup = ptr.To(snapshotv1.GroupName)
		}
		if src.Namespace != spec.Namespace {
			ref.Namespace = ptr.To(src.Namespace)
		}
		pvc.Spec.DataSourceRef = ref
	}
	return pvc
}

// createClaim creates a claim and records it.
func (w *world) createClaim(ctx context.Context, spec ClaimSpec, canary bool) (*claimRec, error) {
	pvc := newClaim(spec)
	var got *corev1.PersistentVolumeClaim
	err := retry(ctx, w.cfg.OpTimeout, func(ctx context.Context) error {
		var err error
		got, err = w.kube.CoreV1().PersistentVolumeClaims(spec.Namespace).Create(ctx, pvc, metav1.CreateOptions{})
		return err
	})
	if apierrors.IsAlreadyExists(err) {
		// An earlier attempt's answer was lost.
		err = retry(ctx, w.cfg.OpTimeout, func(ctx context.Context) error {
			var err error
			got, err = w.kube.CoreV1().PersistentVolumeClaims(spec.Namespace).Get(ctx, spec.Name, metav1.GetOptions{})
			return err
		})
	}
	if err != nil {
		return nil, fmt.Errorf("creating claim %s/%s: %w", spec.Namespace, spec.Name, err)
	}
	c := &claimRec{spec: spec, uid: got.UID, created: time.Now(), canary: canary}
	w.ledger.AddObject(string(got.UID), "claim", spec.Namespace, spec.Name)
	w.mu.Lock()
	w.claims[c.key()] = c
	w.byVolume["pvc-"+string(got.UID)] = c
	w.mu.Unlock()
	return c, nil
}

// deleteClaim deletes a claim and records when.
func (w *world) deleteClaim(ctx context.Context, c *claimRec) {
	w.mu.Lock()
	if c.deleted.IsZero() {
		c.deleted = time.Now()
	}
	w.mu.Unlock()
	err := retry(ctx, w.cfg.OpTimeout, func(ctx context.Context) error {
		return w.kube.CoreV1().PersistentVolumeClaims(c.spec.Namespace).Delete(ctx, c.spec.Name, metav1.DeleteOptions{})
	})
	if err != nil && !apierrors.IsNotFound(err) {
		w.opError("deleting claim %s: %v", c.key(), err)
	}
}

// waitBound waits for a claim to be Bound and returns its PV's handle.
func (w *world) waitBound(ctx context.Context, ns, name string, timeout time.Duration) (string, error) {
	var pvName string
	_, err := poll(ctx, 500*time.Millisecond, timeout, func(ctx context.Context) (bool, string) {
		pvc, err := w.kube.CoreV1().PersistentVolumeClaims(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		pvName = pvc.Spec.VolumeName
		return pvc.Status.Phase == corev1.ClaimBound, string(pvc.Status.Phase)
	})
	if err != nil {
		return "", fmt.Errorf("claim %s/%s to be Bound: %w", ns, name, err)
	}
	var handle string
	err = retry(ctx, timeout, func(ctx context.Context) error {
		pv, err := w.kube.CoreV1().PersistentVolumes().Get(ctx, pvName, metav1.GetOptions{})
		if err == nil {
			handle = pv.Spec.CSI.VolumeHandle
		}
		return err
	})
	return handle, err
}

// makeSource provisions a claim, writes files into its volume (the bed has
// no kubelet: the run writes where the driver keeps the volume) and
// snapshots it; it records both as sources with the files' checksum.
func (w *world) makeSource(ctx context.Context, ns, claim, snapshot string) error {
	spec := ClaimSpec{Namespace: ns, Name: claim}
	if _, err := w.createClaim(ctx, spec, ns == canaryNamespace); err != nil {
		return err
	}
	handle, err := w.waitBound(ctx, ns, claim, w.cfg.OpTimeout)
	if err != nil {
		return err
	}
	dir := filepath.Join(w.dataDir, "volumes", handle)
	if err := writeSourceFiles(dir, w.cfg.Seed, ns+"/"+claim); err != nil {
		return err
	}
	sum, err := dirChecksum(dir)
	if err != nil {
		return err
	}
	w.mu.Lock()
	w.sources[SourceRef{Namespace: ns, Kind: KindClaim, Name: claim}] = &sourceRec{ref: SourceRef{Namespace: ns, Kind: KindClaim, Name: claim}, sum: sum}
	w.mu.Unlock()
	if snapshot == "" {
		return nil
	}
	if err := w.createSnapshot(ctx, ns, snapshot, claim); err != nil {
		return err
	}
	if err := w.waitSnapshotReady(ctx, ns, snapshot, w.cfg.OpTimeout); err != nil {
		return err
	}
	ref := SourceRef{Namespace: ns, Kind: KindSnapshot, Name: snapshot}
	w.mu.Lock()
	w.sources[ref] = &sourceRec{ref: ref, sum: sum}
	w.mu.Unlock()
	return nil
}

func (w *world) createSnapshot(ctx context.Context, ns, name, claim string) error {
	vs := &snapshotv1.VolumeSnapshot{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: snapshotv1.VolumeSnapshotSpec{
			Source:                  snapshotv1.VolumeSnapshotSource{PersistentVolumeClaimName: ptr.To(claim)},
			VolumeSnapshotClassName: ptr.To(cluster.SnapshotClassName),
		},
	}
	var got *snapshotv1.VolumeSnapshot
	err := retry(ctx, w.cfg.OpTimeout, func(ctx context.Context) error {
		var err error
		got, err = w.snaps.SnapshotV1().VolumeSnapshots(ns).Create(ctx, vs, metav1.CreateOptions{})
		return err
	})
	if apierrors.IsAlreadyExists(err) {
		err = retry(ctx, w.cfg.OpTimeout, func(ctx context.Context) error {
			var err error
			got, err = w.snaps.SnapshotV1().VolumeSnapshots(ns).Get(ctx, name, metav1.GetOptions{})
			return err
		})
	}
	if err != nil {
		return fmt.Errorf("creating VolumeSnapshot %s/%s: %w", ns, name, err)
	}
	w.ledger.AddObject(string(got.UID), "VolumeSnapshot", ns, name)
	return nil
}

func (w *world) waitSnapshotReady(ctx context.Context, ns, name string, timeout time.Duration) error {
	_, err := poll(ctx, 500*time.Millisecond, timeout, func(ctx context.Context) (bool, string) {
		s, err := w.snaps.SnapshotV1().VolumeSnapshots(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		return s.Status != nil && ptr.Deref(s.Status.ReadyToUse, false), fmt.Sprintf("%+v", s.Status)
	})
	if err != nil {
		return fmt.Errorf("VolumeSnapshot %s/%s to be ready: %w", ns, name, err)
	}
	return nil
}

func (w *world) deleteSnapshot(ctx context.Context, ns, name string) error {
	err := retry(ctx, w.cfg.OpTimeout, func(ctx context.Context) error {
		return w.snaps.SnapshotV1().VolumeSnapshots(ns).Delete(ctx, name, metav1.DeleteOptions{})
	})
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}

// writeSourceFiles writes a source's files, drawn from the seed and the
// source's name: a binary file and a text file in a subdirectory.
func writeSourceFiles(dir string, seed uint64, name string) error {
	h := fnv.New64a()
	h.Write([]byte(name))
	rng := rand.New(rand.NewPCG(seed, h.Sum64()))
	data := make([]byte, 8<<10)
	for i := range data {
		data[i] = byte(rng.UintN(256))
	}
	files := map[string][]byte{
		"data/blob.bin": data,
		"owner.txt":     []byte(name + "\n"),
	}
	for rel, content := range files {
		p := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, content, 0o644); err != nil {
			return fmt.Errorf("writing source file: %w", err)
		}
	}
	return nil
}

// dirChecksum is the SHA-256 of every regular file under dir: its path
// relative to dir and its contents, in path order.
func dirChecksum(dir string) (string, error) {
	var files []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			files = append(files, p)
		}
		return nil
	})
	if err != nil {
		return "", err
	}
	slices.Sort(files)
	h := sha256.New()
	for _, p := range files {
		rel, _ := filepath.Rel(dir, p)
		fmt.Fprintf(h, "%s\x00", rel)
		f, err := os.Open(p)
		if err != nil {
			return "", err
		}
		_, err = io.Copy(h, f)
		f.Close()
		if err != nil {
			return "", err
		}
	}
	return hex.EncodeToString(h.Sum(nil))[:16], nil
}

// grant returns the record of a pair's grant.
func (w *world) grant(p Pair) *grantRec {
	w.mu.Lock()
	defer w.mu.Unlock()
	g, ok := w.grants[p]
	if !ok {
		g = &grantRec{}
		w.grants[p] = g
	}
	return g
}

func grantName(p Pair) string {
	return "allow-" + p.From + "-" + map[string]string{KindSnapshot: "snapshots", KindClaim: "claims"}[p.Kind]
}

// ensureGrant creates the pair's grant unless it exists. Its window starts
// when the attempt that created it was sent.
func (w *world) ensureGrant(ctx context.Context, p Pair) {
	g := w.grant(p)
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.exists {
		return
	}
	group := ""
	if p.Kind == KindSnapshot {
		group = snapshotv1.GroupName
	}
	obj := &gatewayv1beta1.ReferenceGrant{
		ObjectMeta: metav1.ObjectMeta{Name: grantName(p), Namespace: p.To},
		Spec: gatewayv1beta1.ReferenceGrantSpec{
			From: []gatewayv1beta1.ReferenceGrantFrom{{Group: "", Kind: "PersistentVolumeClaim", Namespace: gatewayv1beta1.Namespace(p.From)}},
			To:   []gatewayv1beta1.ReferenceGrantTo{{Group: gatewayv1beta1.Group(group), Kind: gatewayv1beta1.Kind(p.Kind)}},
		},
	}
	var sent, prevSent time.Time
	err := retry(ctx, w.cfg.OpTimeout, func(ctx context.Context) error {
		prevSent, sent = sent, time.Now()
		_, err := w.gateway.GatewayV1beta1().ReferenceGrants(p.To).Create(ctx, obj, metav1.CreateOptions{})
		return err
	})
	switch {
	case err == nil:
	case apierrors.IsAlreadyExists(err) && !prevSent.IsZero():
		// The attempt before made it; its answer was lost.
		sent = prevSent
	default:
		w.opError("creating ReferenceGrant %s/%s: %v", p.To, grantName(p), err)
		return
	}
	g.exists = true
	g.windows = append(g.windows, invariants.GrantWindow{Created: sent})
}

// revokeGrant deletes the pair's grant if it exists; its window ends when
// the deletion has returned.
func (w *world) revokeGrant(ctx context.Context, p Pair) {
	g := w.grant(p)
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.exists {
		return
	}
	err := retry(ctx, w.cfg.OpTimeout, func(ctx context.Context) error {
		return w.gateway.GatewayV1beta1().ReferenceGrants(p.To).Delete(ctx, grantName(p), metav1.DeleteOptions{})
	})
	if err != nil && !apierrors.IsNotFound(err) {
		w.opError("deleting ReferenceGrant %s/%s: %v", p.To, grantName(p), err)
		return
	}
	g.exists = false
	g.windows[len(g.windows)-1].Revoked = time.Now()
}

// grantState returns whether the pair's grant exists and its windows.
func (w *world) grantState(p Pair) (bool, []invariants.GrantWindow) {
	g := w.grant(p)
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.exists, append([]invariants.GrantWindow(nil), g.windows...)
}

// runOp does one workload operation.
func (w *world) runOp(ctx context.Context, op Op) {
	switch op.Kind {
	case OpClaim:
		w.runClaim(ctx, *op.Claim)
	case OpEphemeral:
		w.runEphemeral(ctx, op.Ephemeral)
	case OpGrantToggle:
		if exists, _ := w.grantState(*op.Pair); exists {
			w.revokeGrant(ctx, *op.Pair)
		} else {
			w.ensureGrant(ctx, *op.Pair)
		}
	}
}

// runClaim creates one claim and does to its grant and to it what the plan
// says, in order of time.
func (w *world) runClaim(ctx context.Context, spec ClaimSpec) {
	cross := spec.Cross()
	if cross && (spec.Grant == GrantFirst || spec.Grant == GrantRevoke) {
		w.ensureGrant(ctx, spec.Pair())
	}
	c, err := w.createClaim(ctx, spec, false)
	if err != nil {
		w.opError("%v", err)
		return
	}
	type step struct {
		at time.Duration
		do func()
	}
	var steps []step
	if cross && spec.Grant == GrantLate {
		steps = append(steps, step{spec.GrantDelay, func() { w.ensureGrant(ctx, spec.Pair()) }})
	}
	if cross && spec.Grant == GrantRevoke {
		steps = append(steps, step{spec.GrantDelay, func() { w.revokeGrant(ctx, spec.Pair()) }})
	}
	if spec.DeleteAfter > 0 {
		steps = append(steps, step{spec.DeleteAfter, func() { w.deleteClaim(ctx, c) }})
	}
	slices.SortStableFunc(steps, func(a, b step) int { return int(a.at - b.at) })
	start := time.Now()
	for _, s := range steps {
		if !sleep(ctx, time.Until(start.Add(s.at))) {
			return
		}
		s.do()
	}
	if spec.DeleteBound {
		// Not every claim can bind (no grant, its source gone): a minute.
		if _, err := w.waitBound(ctx, spec.Namespace, spec.Name, min(w.cfg.OpTimeout, time.Minute)); err != nil {
			klog.FromContext(ctx).V(2).Info("Claim to delete once bound did not bind; deleting it anyway", "claim", c.key(), "err", err)
		}
		w.deleteClaim(ctx, c)
	}
}

// runEphemeral makes a source, claims from it, and deletes the source while
// they may still be provisioned.
func (w *world) runEphemeral(ctx context.Context, e *EphemeralSpec) {
	if err := w.makeSource(ctx, e.Namespace, e.Claim, e.Snapshot); err != nil {
		w.opError("ephemeral source %s/%s: %v (its %d claims not made)", e.Namespace, e.Claim, err, len(e.Dependents))
		return
	}
	var wg sync.WaitGroup
	for _, dep := range e.Dependents {
		wg.Go(func() { w.runClaim(ctx, dep) })
	}
	if sleep(ctx, e.DeleteAfter) {
		if e.DeleteSnapshot {
			w.markSourceDeleted(SourceRef{Namespace: e.Namespace, Kind: KindSnapshot, Name: e.Snapshot})
			if err := w.deleteSnapshot(ctx, e.Namespace, e.Snapshot); err != nil {
				w.opError("deleting VolumeSnapshot %s/%s: %v", e.Namespace, e.Snapshot, err)
			}
		}
		if e.DeleteClaim {
			w.markSourceDeleted(SourceRef{Namespace: e.Namespace, Kind: KindClaim, Name: e.Claim})
			w.mu.Lock()
			c := w.claims[e.Namespace+"/"+e.Claim]
			w.mu.Unlock()
			w.deleteClaim(ctx, c)
		}
	}
	wg.Wait()
}

func (w *world) markSourceDeleted(ref SourceRef) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if s := w.sources[ref]; s != nil {
		s.deleted = true
	}
}

// sleep waits d or until ctx ends; false when ctx ended.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// removeLeftovers deletes the namespaces an earlier run left (interrupted,
// or -keep), and waits until they are gone.
func (w *world) removeLeftovers(ctx context.Context) error {
	list, err := w.kube.CoreV1().Namespaces().List(ctx, metav1.ListOptions{LabelSelector: runLabel})
	if err != nil {
		return fmt.Errorf("listing namespaces: %w", err)
	}
	var names []string
	for _, ns := range list.Items {
		names = append(names, ns.Name)
	}
	if len(names) == 0 {
		return nil
	}
	klog.FromContext(ctx).Info("Removing namespaces an earlier soak run left", "namespaces", len(names))
	return w.deleteNamespaces(ctx, names, w.cfg.CleanupTimeout)
}

// deleteNamespaces deletes namespaces and waits until they are gone.
func (w *world) deleteNamespaces(ctx context.Context, names []string, timeout time.Duration) error {
	for _, n := range names {
		err := retry(ctx, time.Minute, func(ctx context.Context) error {
			return w.kube.CoreV1().Namespaces().Delete(ctx, n, metav1.DeleteOptions{})
		})
		if err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("deleting namespace %s: %w", n, err)
		}
	}
	_, err := poll(ctx, time.Second, timeout, func(ctx context.Context) (bool, string) {
		list, err := w.kube.CoreV1().Namespaces().List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err.Error()
		}
		var left []string
		for _, ns := range list.Items {
			if slices.Contains(names, ns.Name) {
				left = append(left, ns.Name)
			}
		}
		return len(left) == 0, "still there: " + strings.Join(left, " ")
	})
	if err != nil {
		return fmt.Errorf("namespaces to be gone: %w", err)
	}
	return nil
}
