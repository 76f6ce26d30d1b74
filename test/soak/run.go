// Package soak is the fault and soak harness of the sidecar on the local test
// bed (test/cluster): a mixed workload — plain claims, same- and
// cross-namespace restores and clones, grants created and revoked, claims
// and sources deleted mid-flight — over many namespaces, while faults drawn
// from a seed hit the bed one after the other: sidecar replicas and the
// leader killed, the CSI driver, kube-apiserver and snapshot-controller
// killed and started again, driver errors per method and code, driver calls
// slower than the sidecar's --timeout. The invariants (checks.go and
// test/invariants) are checked while it runs and once the bed settled.
//
// `make soak` (cmd/soak) runs the long run, `make test` a short one;
// docs/reliability.md explains the faults, the guarantees and the figures.
package soak

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/klog/v2"

	"github.com/crossns/external-provisioner/test/cluster"
	"github.com/crossns/external-provisioner/test/invariants"
)

// DriverName is the bed's CSI driver.
const DriverName = cluster.DriverName

// run is one soak run in progress.
type run struct {
	cfg   Config
	plan  *Plan
	bed   *bedControl
	w     *world
	check *checker
}

func (r *run) namespaces() []string {
	return append(append([]string(nil), r.plan.Namespaces...), canaryNamespace)
}

// sidecarArgs are the flags of both replicas.
func (cfg Config) sidecarArgs() []string {
	return append([]string{
		"--leader-election", "--leader-election-namespace=default",
		"--timeout=" + cfg.SidecarTimeout.String(),
	}, cfg.SidecarArgs...)
}

// Run runs the soak on a running bed and returns its report; the error is
// for a run that could not be done (no bed, setup failed), not for
// violations (Report.Failed). At the end the sidecar runs again alone with
// the flags it had.
func Run(ctx context.Context, bed *cluster.Cluster, cfg Config) (*Report, error) {
	logger := klog.FromContext(ctx)
	if cfg.Seed == 0 {
		cfg.Seed = uint64(time.Now().UnixNano())
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	plan := NewPlan(cfg)
	rep := &Report{Seed: cfg.Seed, Config: cfg, Started: time.Now(), CPUs: runtime.NumCPU()}
	rep.Claims.Planned = plan.Claims()
	logger.Info("Soak run", "seed", cfg.Seed, "claims", rep.Claims.Planned, "namespaces", cfg.Namespaces, "faults", len(plan.Faults))

	bc := newBedControl(bed)
	w, err := newWorld(cfg, bed.RESTConfig(), bc, bed.DriverDataDir())
	if err != nil {
		return nil, err
	}
	r := &run{cfg: cfg, plan: plan, bed: bc, w: w}
	r.check = newChecker(r)

	if _, err := os.Stat(bed.DriverArrivalLogPath()); err != nil {
		return nil, fmt.Errorf("the bed's driver writes no arrival log (%v): the bed predates it; restart it with `make cluster-down cluster-up`", err)
	}
	if err := w.removeLeftovers(ctx); err != nil {
		return nil, err
	}
	// Both replicas, leader election, the run's --timeout; put back at the end.
	original := bed.ProvisionerExtraArgs()
	defer func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
		defer cancel()
		if err := bed.StopProvisionerReplica(rctx); err != nil {
			logger.Error(err, "Stopping the second replica")
		}
		if err := bed.RestartProvisioner(rctx, original...); err != nil {
			logger.Error(err, "Restoring the sidecar's flags")
		}
	}()
	if err := bc.driverControl(ctx, "/reset", struct{}{}); err != nil {
		return nil, err
	}
	if err := bed.RestartProvisioner(ctx, cfg.sidecarArgs()...); err != nil {
		return nil, err
	}
	if err := bed.StartProvisionerReplica(ctx, cfg.sidecarArgs()...); err != nil {
		return nil, err
	}
	logOffsets := map[string]int64{}
	for _, comp := range sidecars {
		logOffsets[comp] = fileSize(bed.LogPath(comp))
	}

	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	var bg sync.WaitGroup
	bg.Go(func() { bc.supervise(runCtx) })

	// Setup, without faults: namespaces, a source claim with files and a
	// snapshot of it in each, the canary source.
	t0 := time.Now()
	if err := w.createNamespaces(ctx, r.namespaces()); err != nil {
		return nil, err
	}
	if err := r.makeSources(ctx); err != nil {
		return nil, err
	}
	logger.Info("Sources ready", "duration", time.Since(t0).Round(time.Second))
	bg.Go(func() { r.check.watch(runCtx) })

	// Faults, each with the batch of operations it hits.
	var ops sync.WaitGroup
	release := func(batch []Op) {
		for _, op := range batch {
			ops.Go(func() { w.runOp(ctx, op) })
		}
	}
	for k, f := range plan.Faults {
		if !sleep(ctx, f.Gap) {
			return nil, ctx.Err()
		}
		release(plan.Batches[k])
		sleep(ctx, f.Offset)
		r.check.setFault(k)
		res := r.injectFault(ctx, f)
		r.check.setFault(-1)
		if res.Error != "" {
			r.check.report(CheckRecovery, fmt.Sprintf("fault %d", k), fmt.Sprintf("fault %s: %s", f, res.Error))
		}
		rep.Faults = append(rep.Faults, res)
	}
	release(plan.Batches[len(plan.Faults)])
	ops.Wait()
	logger.Info("Workload and faults done; waiting for the bed to settle")

	// The end: no knob left, every component up, the bed settled.
	if err := bc.driverControl(ctx, "/reset", struct{}{}); err != nil {
		return nil, err
	}
	left, settled := r.check.settle(ctx, cfg.SettleTimeout)
	rep.SettleSeconds = round2(settled.Seconds())
	for _, f := range left {
		r.check.reportFinding(f)
	}
	if err := r.check.once(ctx, true); err != nil {
		logger.Error(err, "Final check")
	}
	stop()
	bg.Wait()
	rep.RepeatsAfterRevocation = r.finalFigures(ctx, rep)
	r.check.checkLogs(logOffsets)
	mem := bc.memory()
	rep.PeakRSSMiB, rep.PeakRSSComponent = round2(float64(mem.PeakKiB)/1024), mem.PeakComponent
	rep.EndRSSMiB = map[string]float64{}
	for comp, kib := range mem.LastKiB {
		rep.EndRSSMiB[comp] = round2(float64(kib) / 1024)
	}
	if rep.PeakRSSMiB > cfg.MaxRSSMiB {
		r.check.report(CheckRSS, "peak", fmt.Sprintf("%s reached %.0f MiB resident (VmHWM), over the bound of %.0f MiB", mem.PeakComponent, rep.PeakRSSMiB, cfg.MaxRSSMiB))
	}

	if !cfg.Keep {
		r.cleanup(ctx)
	}
	rep.Violations = r.check.all()
	rep.Exits = bc.exitsSoFar()
	w.mu.Lock()
	rep.OpErrors = append([]string(nil), w.opErrors...)
	w.mu.Unlock()
	rep.ByKind = byKind(rep.Faults)
	rep.Finished = time.Now()
	rep.Seconds = round2(rep.Finished.Sub(rep.Started).Seconds())
	return rep, nil
}

// makeSources makes every namespace's source and the canary source, a few
// at a time.
func (r *run) makeSources(ctx context.Context) error {
	sem := make(chan struct{}, 8)
	errs := make(chan error, len(r.plan.Namespaces)+1)
	var wg sync.WaitGroup
	do := func(ns, claim, snapshot string) {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			if err := r.w.makeSource(ctx, ns, claim, snapshot); err != nil {
				errs <- fmt.Errorf("source of %s: %w", ns, err)
			}
		})
	}
	for _, ns := range r.plan.Namespaces {
		do(ns, sourceClaim, sourceSnapshot)
	}
	do(canaryNamespace, canarySource, "")
	wg.Wait()
	close(errs)
	return <-errs
}

// finalFigures counts the claims and grants of the run and returns the
// repeats after revocation.
func (r *run) finalFigures(ctx context.Context, rep *Report) int {
	state, err := r.survey(ctx)
	if err != nil {
		klog.FromContext(ctx).Error(err, "Surveying for the figures")
		return 0
	}
	phase := map[string]corev1.PersistentVolumeClaimPhase{}
	for _, pvc := range state.Claims {
		phase[string(pvc.UID)] = pvc.Status.Phase
	}
	w := r.w
	w.mu.Lock()
	for _, c := range w.claims {
		switch {
		case c.canary:
			rep.Claims.Canaries++
			continue
		case !c.deleted.IsZero():
			rep.Claims.Deleted++
		case phase[string(c.uid)] == corev1.ClaimBound:
			rep.Claims.Bound++
		default:
			rep.Claims.NotBound++
		}
		rep.Claims.Created++
		if c.spec.Cross() {
			rep.Claims.CrossNamespace++
		}
	}
	for _, g := range w.grants {
		g.mu.Lock()
		rep.GrantsCreated += len(g.windows)
		for _, win := range g.windows {
			if !win.Revoked.IsZero() {
				rep.GrantsRevoked++
			}
		}
		g.mu.Unlock()
	}
	w.mu.Unlock()
	return r.check.checkGrants(state, true)
}

// cleanup deletes everything the run made and checks that the driver's
// backend holds nothing of it afterwards.
func (r *run) cleanup(ctx context.Context) {
	logger := klog.FromContext(ctx)
	logger.Info("Deleting the run's namespaces")
	if err := r.w.deleteNamespaces(ctx, r.namespaces(), r.cfg.CleanupTimeout); err != nil {
		r.check.report(invariants.CheckTerminating, "cleanup", fmt.Sprintf("the run's namespaces were not gone %s after deleting them: %v", r.cfg.CleanupTimeout, err))
		return
	}
	// Deleting a namespace deletes its claims; the sidecar then deletes
	// their volumes.
	var last string
	_, err := poll(ctx, 2*time.Second, r.cfg.CleanupTimeout, func(ctx context.Context) (bool, string) {
		state, err := r.survey(ctx)
		if err != nil {
			return false, err.Error()
		}
		var left []string
		for _, f := range invariants.BackendFindings(state, r.w.ledger) {
			if f.Owner.Who == who {
				left = append(left, f.String())
			}
		}
		pvs, err := r.listOurPVs(ctx)
		if err != nil {
			return false, err.Error()
		}
		for _, pv := range pvs {
			left = append(left, "PV "+pv+" of a claim of the run still there")
		}
		last = strings.Join(left, "\n\t")
		return len(left) == 0, last
	})
	if err != nil {
		r.check.report(invariants.CheckDeletedGone, "cleanup", fmt.Sprintf("%s after deleting the run's namespaces, left:\n\t%s", r.cfg.CleanupTimeout, last))
	}
}
