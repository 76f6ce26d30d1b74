package soak

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/klog/v2"

	"github.com/crossns/external-provisioner/test/csidriver"
	"github.com/crossns/external-provisioner/test/invariants"
)

// The soak's own checks; the others are test/invariants' (CheckGrants,
// CheckBackend, CheckDeletedGone, CheckTerminating).
const (
	// CheckData: a claim Bound from a source holds the source's files.
	CheckData = "restored-data-matches"
	// CheckAuthorizedBound: every claim that may be provisioned at the end
	// (its source there, same namespace or a grant allowing it) is Bound.
	CheckAuthorizedBound = "authorized-claims-bound"
	// CheckRSS: the sidecar's resident memory stays under Config.MaxRSSMiB.
	CheckRSS = "sidecar-rss-bounded"
	// CheckCrash: no sidecar panics or dies of a fatal error.
	CheckCrash = "no-crash"
	// CheckOneLeader: never two replicas lead at once.
	CheckOneLeader = "one-leader"
	// CheckRecovery: after every fault a probe operation succeeds within
	// Config.ProbeTimeout.
	CheckRecovery = "recovers-after-fault"
)

// AllChecks names every check, in report order.
var AllChecks = []string{
	invariants.CheckGrants, CheckData, CheckAuthorizedBound, invariants.CheckBackend,
	invariants.CheckDeletedGone, invariants.CheckTerminating, CheckRSS, CheckCrash, CheckOneLeader, CheckRecovery,
}

// Violation is one broken invariant.
type Violation struct {
	Check string    `json:"check"`
	Msg   string    `json:"message"`
	At    time.Time `json:"at"`
	// Fault is the index of the fault running when it was found; -1: none.
	Fault int `json:"fault"`
}

func (v Violation) String() string {
	during := ""
	if v.Fault >= 0 {
		during = fmt.Sprintf(" (during fault #%d)", v.Fault)
	}
	return fmt.Sprintf("[%s] %s%s: %s", v.Check, v.At.Format("15:04:05"), during, v.Msg)
}

// checker runs the invariants while the run goes on and at its end.
type checker struct {
	r *run

	mu         sync.Mutex
	violations []Violation
	seen       map[string]bool
	// fault is the index of the fault being injected now, -1 between.
	fault int

	// The driver's call and arrival logs, read on from where the last
	// check stopped; calls are our claims' CreateVolume calls.
	callLog, arrivalLog tail
	calls               invariants.CallSet
	// lostSince is when each lost volume or snapshot was first seen: a
	// finding that one survey makes and the next does not is a race of
	// the survey, not a loss.
	lostSince map[string]time.Time
	// twoLeaders counts consecutive checks that saw both replicas lead.
	twoLeaders int
	surveys    int
}

func newChecker(r *run) *checker {
	return &checker{r: r, seen: map[string]bool{}, fault: -1, calls: invariants.CallSet{}, lostSince: map[string]time.Time{},
		callLog: tail{path: r.bed.bed.DriverCallLogPath()}, arrivalLog: tail{path: r.bed.bed.DriverArrivalLogPath()}}
}

func (c *checker) setFault(i int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.fault = i
}

// report records a violation once per key.
func (c *checker) report(check, key, msg string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.seen[check+" "+key] {
		return
	}
	c.seen[check+" "+key] = true
	v := Violation{Check: check, Msg: msg, At: time.Now(), Fault: c.fault}
	c.violations = append(c.violations, v)
	klog.Background().Error(nil, "Invariant violated", "check", check, "message", msg, "fault", v.Fault)
}

func (c *checker) reportFinding(f invariants.Finding) { c.report(f.Check, f.Key, f.String()) }

func (c *checker) all() []Violation {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Violation(nil), c.violations...)
}

// watch checks every few seconds until ctx ends: grants against the call
// log, the data of newly Bound claims, lost volumes, one leader.
func (c *checker) watch(ctx context.Context) {
	tick := time.NewTicker(5 * time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if err := c.once(ctx, false); err != nil {
			klog.FromContext(ctx).V(2).Info("Check skipped", "err", err)
		}
	}
}

// once runs the checks that hold at any time; final adds the end's rule on
// Bound cross-namespace claims.
func (c *checker) once(ctx context.Context, final bool) error {
	if err := c.readCalls(); err != nil {
		return err
	}
	state, err := c.r.survey(ctx)
	if err != nil {
		return err
	}
	c.checkGrants(state, final)
	c.checkData(state, final)
	c.checkLost(state, final)
	if !final {
		c.checkLeaders(ctx)
	}
	return nil
}

// tail reads a log on from where it stopped, whole lines only.
type tail struct {
	path   string
	offset int64
}

// next returns the complete lines written since the last call.
func (t *tail) next() ([]byte, error) {
	f, err := os.Open(t.path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.NewSectionReader(f, t.offset, 1<<40))
	if err != nil {
		return nil, err
	}
	end := bytes.LastIndexByte(data, '\n')
	if end < 0 {
		return nil, nil
	}
	t.offset += int64(end + 1)
	return data[:end+1], nil
}

// readCalls reads the new lines of the driver's arrival and call logs. The
// arrival log shows a call from its start: the call log only once it ended,
// and never a call that died with the driver.
func (c *checker) readCalls() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	arrived, err := c.arrivalLog.next()
	if err != nil {
		return err
	}
	arrivals, err := csidriver.ParseArrivals(bytes.NewReader(arrived))
	if err != nil {
		return err
	}
	ended, err := c.callLog.next()
	if err != nil {
		return err
	}
	recs, err := csidriver.ParseCallLog(bytes.NewReader(ended))
	if err != nil {
		return err
	}
	calls, err := invariants.CreateCalls(recs)
	if err != nil {
		return err
	}
	calls = append(invariants.ArrivedCreateCalls(arrivals), calls...)
	c.r.w.mu.Lock()
	defer c.r.w.mu.Unlock()
	for _, call := range calls {
		if c.r.w.byVolume[call.Name] != nil {
			c.calls.Add(call)
		}
	}
	return nil
}

// crossClaim describes a claim for the grant check.
func (c *checker) crossClaim(rec *claimRec) invariants.CrossClaim {
	_, windows := c.r.w.grantState(rec.spec.Pair())
	return invariants.CrossClaim{Namespace: rec.spec.Namespace, Name: rec.spec.Name, Source: rec.spec.Source.String(), Windows: windows, Who: who}
}

// checkGrants checks every cross-namespace claim's calls.
func (c *checker) checkGrants(state *invariants.State, final bool) (repeats int) {
	bound := map[string]bool{}
	for _, pvc := range state.Claims {
		if pvc.Status.Phase == corev1.ClaimBound && pvc.DeletionTimestamp == nil {
			bound["pvc-"+string(pvc.UID)] = true
		}
	}
	c.mu.Lock()
	byName := map[string][]invariants.CreateCall{}
	for name := range c.calls {
		byName[name] = c.calls.Of(name)
	}
	c.mu.Unlock()
	for name, calls := range byName {
		c.r.w.mu.Lock()
		rec := c.r.w.byVolume[name]
		c.r.w.mu.Unlock()
		if rec == nil || !rec.spec.Cross() {
			continue
		}
		findings, n := invariants.GrantFindings(c.crossClaim(rec), calls, final, bound[name])
		repeats += n
		for _, f := range findings {
			c.reportFinding(f)
		}
	}
	return repeats
}

// checkData compares the files of Bound claims with their sources': newly
// Bound ones while running, all at the end.
func (c *checker) checkData(state *invariants.State, final bool) {
	pvs := map[string]*corev1.PersistentVolume{}
	for i := range state.PVs {
		pvs[state.PVs[i].Name] = &state.PVs[i]
	}
	for _, pvc := range state.Claims {
		if pvc.Status.Phase != corev1.ClaimBound || pvc.DeletionTimestamp != nil {
			continue
		}
		w := c.r.w
		w.mu.Lock()
		rec := w.claims[pvc.Namespace+"/"+pvc.Name]
		var src *sourceRec
		if rec != nil && rec.spec.Source != nil {
			src = w.sources[*rec.spec.Source]
		}
		skip := rec == nil || rec.uid != pvc.UID || src == nil || (rec.checked && !final)
		w.mu.Unlock()
		if skip {
			continue
		}
		pv := pvs[pvc.Spec.VolumeName]
		if pv == nil || pv.Spec.CSI == nil {
			continue
		}
		sum, err := dirChecksum(filepath.Join(w.dataDir, "volumes", pv.Spec.CSI.VolumeHandle))
		switch {
		case err != nil:
			c.report(CheckData, "data "+rec.key(), fmt.Sprintf("claim %s (from %s) is Bound to %s, but its files cannot be read: %v", rec.key(), src.ref, pv.Spec.CSI.VolumeHandle, err))
		case sum != src.sum:
			c.report(CheckData, "data "+rec.key(), fmt.Sprintf("claim %s (from %s) is Bound to volume %s whose files (checksum %s) are not the source's (%s)", rec.key(), src.ref, pv.Spec.CSI.VolumeHandle, sum, src.sum))
		}
		w.mu.Lock()
		rec.checked = true
		w.mu.Unlock()
	}
}

// checkLost reports volumes and snapshots of ours that are lost (a PV or
// content whose backend object is gone) in two surveys 15 s apart, or at
// the end.
func (c *checker) checkLost(state *invariants.State, final bool) {
	now := time.Now()
	current := map[string]bool{}
	for _, f := range invariants.BackendFindings(state, c.r.w.ledger) {
		if f.Owner.Who != who || !strings.HasPrefix(f.Key, "lost ") {
			continue
		}
		current[f.Key] = true
		c.mu.Lock()
		first, ok := c.lostSince[f.Key]
		if !ok {
			c.lostSince[f.Key] = now
			first = now
		}
		c.mu.Unlock()
		if final || now.Sub(first) >= 15*time.Second {
			c.reportFinding(f)
		}
	}
	c.mu.Lock()
	for k := range c.lostSince {
		if !current[k] {
			delete(c.lostSince, k)
		}
	}
	c.mu.Unlock()
}

// checkLeaders reports two replicas leading in two checks in a row.
func (c *checker) checkLeaders(ctx context.Context) {
	l := c.r.bed.leaders(ctx)
	c.mu.Lock()
	if len(l) > 1 {
		c.twoLeaders++
	} else {
		c.twoLeaders = 0
	}
	n := c.twoLeaders
	c.mu.Unlock()
	if n >= 2 {
		c.report(CheckOneLeader, "two leaders", fmt.Sprintf("both sidecar replicas report leader_election_master_status 1 (%v) in two checks 5 s apart", l))
	}
}

// expectBound reports whether a claim that was not deleted must end Bound:
// an empty one always; one from a source when the source is still there
// and the claim may use it (same namespace, or a grant allows it now).
func expectBound(spec ClaimSpec, src *sourceRec, granted bool) bool {
	if spec.Source == nil {
		return true
	}
	if src == nil || src.deleted {
		return false
	}
	return !spec.Cross() || granted
}

// pending lists what keeps the bed from being settled, as findings: the
// backend against the API, leftovers of deleted claims, and claims that
// must be Bound and are not.
func (c *checker) pending(state *invariants.State) []invariants.Finding {
	var out []invariants.Finding
	for _, f := range invariants.BackendFindings(state, c.r.w.ledger) {
		if f.Owner.Who == who {
			out = append(out, f)
		}
	}
	for _, f := range invariants.LeftoverFindings(state, who, c.r.namespaces()) {
		if !heldByPendingRestore(state, f) {
			out = append(out, f)
		}
	}
	claims := map[string]*corev1.PersistentVolumeClaim{}
	for i := range state.Claims {
		claims[state.Claims[i].Namespace+"/"+state.Claims[i].Name] = &state.Claims[i]
	}
	pvOfClaim := map[string]*corev1.PersistentVolume{}
	for i := range state.PVs {
		if ref := state.PVs[i].Spec.ClaimRef; ref != nil {
			pvOfClaim[string(ref.UID)] = &state.PVs[i]
		}
	}
	backend := map[string]csidriver.Volume{}
	for _, v := range state.Volumes {
		backend[v.Name] = v
	}
	w := c.r.w
	w.mu.Lock()
	recs := make([]*claimRec, 0, len(w.claims))
	for _, rec := range w.claims {
		recs = append(recs, rec)
	}
	w.mu.Unlock()
	slices.SortFunc(recs, func(a, b *claimRec) int { return strings.Compare(a.key(), b.key()) })
	for _, rec := range recs {
		pvc := claims[rec.key()]
		if pvc != nil && pvc.UID != rec.uid {
			pvc = nil // a claim of the same name made later
		}
		w.mu.Lock()
		deleted := !rec.deleted.IsZero()
		var src *sourceRec
		if rec.spec.Source != nil {
			src = w.sources[*rec.spec.Source]
		}
		w.mu.Unlock()
		if deleted {
			// Kept for the leftover findings: a Terminating claim.
			if pvc != nil && pvc.DeletionTimestamp != nil {
				continue
			}
			var left []string
			if pvc != nil {
				left = append(left, "the claim ("+string(pvc.Status.Phase)+")")
			}
			if pv := pvOfClaim[string(rec.uid)]; pv != nil {
				left = append(left, fmt.Sprintf("PV %s (%s)", pv.Name, pv.Status.Phase))
			}
			if v, ok := backend["pvc-"+string(rec.uid)]; ok {
				left = append(left, "backend volume "+v.ID)
			}
			if len(left) > 0 {
				out = append(out, invariants.Finding{
					Check: invariants.CheckDeletedGone, Key: "not gone " + rec.key(),
					Msg:   fmt.Sprintf("claim %s deleted at %s, but %s still there", rec.key(), rec.deleted.Format("15:04:05"), strings.Join(left, ", ")),
					Owner: invariants.Owner{Who: who, What: "claim " + rec.key()},
				})
			}
			continue
		}
		granted := false
		if rec.spec.Cross() {
			granted, _ = w.grantState(rec.spec.Pair())
		}
		if !expectBound(rec.spec, src, granted) {
			continue
		}
		phase := corev1.PersistentVolumeClaimPhase("gone")
		if pvc != nil {
			phase = pvc.Status.Phase
		}
		if phase != corev1.ClaimBound {
			why := "an empty volume"
			if rec.spec.Source != nil {
				why = "from " + rec.spec.Source.String() + ", which is there"
				if rec.spec.Cross() {
					why += " and a grant allows"
				}
			}
			out = append(out, invariants.Finding{
				Check: CheckAuthorizedBound, Key: "not bound " + rec.key(),
				Msg:   fmt.Sprintf("claim %s (%s) is %s, not Bound", rec.key(), why, phase),
				Owner: invariants.Owner{Who: who, What: "claim " + rec.key()},
			})
		}
	}
	return out
}

// surveyOurs reads the bed for the checks.
func (r *run) survey(ctx context.Context) (*invariants.State, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	return invariants.Survey(ctx, invariants.Clients{Kube: r.w.kube, Snapshots: r.w.snaps}, r.w.dataDir, DriverName, r.namespaces())
}

// settle waits until nothing is pending, and returns what still was at
// the timeout.
func (c *checker) settle(ctx context.Context, timeout time.Duration) ([]invariants.Finding, time.Duration) {
	start := time.Now()
	var last []invariants.Finding
	logged := start
	_, err := poll(ctx, 3*time.Second, timeout, func(ctx context.Context) (bool, string) {
		state, err := c.r.survey(ctx)
		if err != nil {
			return false, err.Error()
		}
		last = c.pending(state)
		if len(last) > 0 && time.Since(logged) >= 30*time.Second {
			logged = time.Now()
			var first []string
			for _, f := range last[:min(len(last), 5)] {
				first = append(first, f.String())
			}
			klog.FromContext(ctx).Info("Not settled yet", "pending", len(last), "first", first)
		}
		return len(last) == 0, fmt.Sprintf("%d pending", len(last))
	})
	if err == nil {
		last = nil
	}
	return last, time.Since(start)
}

// checkLogs reports sidecar crashes: a panic or fatal error in the log of
// either replica since the run started.
func (c *checker) checkLogs(offsets map[string]int64) {
	for comp, off := range offsets {
		path := c.r.bed.bed.LogPath(comp)
		f, err := os.Open(path)
		if err != nil {
			continue
		}
		data, err := io.ReadAll(io.NewSectionReader(f, off, 1<<40))
		f.Close()
		if err != nil {
			continue
		}
		for _, marker := range []string{"panic:", "fatal error:"} {
			if i := bytes.Index(data, []byte(marker)); i >= 0 {
				end := min(len(data), i+2000)
				c.report(CheckCrash, comp+" "+marker, fmt.Sprintf("%s logged %q: %s", comp, marker, data[i:end]))
			}
		}
	}
}

// listOurPVs counts the PVs of the run's claims.
func (r *run) listOurPVs(ctx context.Context) ([]string, error) {
	pvs, err := r.w.kube.CoreV1().PersistentVolumes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	ns := r.namespaces()
	var out []string
	for _, pv := range pvs.Items {
		if ref := pv.Spec.ClaimRef; ref != nil && slices.Contains(ns, ref.Namespace) {
			out = append(out, pv.Name)
		}
	}
	return out, nil
}

// heldByPendingRestore reports whether f is a VolumeSnapshot left
// Terminating because a Pending claim of its namespace made after the delete
// restores from it: the stock snapshot-controller keeps its own
// source-protection finalizer while such a claim exists, and the sidecar
// refuses a claim made after its source's delete (as upstream refuses every
// claim of a source being deleted), so the snapshot goes when the claim does.
// The run deletes its namespaces at the end, and then it must go. A claim
// made before the delete (in its second included) gets its volume: a
// snapshot left waiting for one is a violation.
func heldByPendingRestore(state *invariants.State, f invariants.Finding) bool {
	nsName, ok := strings.CutPrefix(f.Key, "terminating VolumeSnapshot ")
	if !ok {
		return false
	}
	ns, name, _ := strings.Cut(nsName, "/")
	var deleted *metav1.Time
	for _, vs := range state.VolumeSnapshots {
		if vs.Namespace == ns && vs.Name == name {
			deleted = vs.DeletionTimestamp
		}
	}
	if deleted == nil {
		return false
	}
	for _, pvc := range state.Claims {
		if pvc.Namespace != ns || pvc.DeletionTimestamp != nil || pvc.Status.Phase != corev1.ClaimPending {
			continue
		}
		ds := pvc.Spec.DataSource
		if ds != nil && ds.Kind == KindSnapshot && ds.Name == name && deleted.Before(&pvc.CreationTimestamp) {
			return true
		}
	}
	return false
}
