package bench

import (
	"context"
	"fmt"
	"time"

	"k8s.io/klog/v2"
)

// FanoutResult is one fan-out: Claims claims in Namespaces namespaces,
// created at once, all restoring the snapshot in the source namespace.
type FanoutResult struct {
	Claims     int `json:"claims"`
	Namespaces int `json:"namespaces"`
	// CreateSeconds is how long the bench took to create every claim.
	CreateSeconds float64 `json:"createSeconds"`
	// LastPVSeconds and LastBoundSeconds run from the first create request
	// to the last PV ADD and the last claim Bound.
	LastPVSeconds    float64 `json:"lastPVSeconds"`
	LastBoundSeconds float64 `json:"lastBoundSeconds"`
	// PVsPerSecond and BoundPerSecond are Claims over those spans.
	PVsPerSecond   float64 `json:"pvsPerSecond"`
	BoundPerSecond float64 `json:"boundPerSecond"`
	// CreateToPV and CreateToBound are per claim, from its create request.
	CreateToPV    Percentiles `json:"createToPV"`
	CreateToBound Percentiles `json:"createToBound"`
	// Requests are the sidecar's API requests during the fan-out (until its
	// counters settled, Events included), by client, verb and resource.
	Requests []RequestCount `json:"requests"`
	// RequestsPerClaim sums Requests per claim by client.
	RequestsPerClaim map[string]float64 `json:"requestsPerClaim"`
	// Settled is false when the counters were still moving at SettleMax.
	Settled bool `json:"settled"`
	// FailedAttempts are provisioning attempts the provision loop counted
	// as failed (each one is retried after backoff).
	FailedAttempts float64 `json:"failedAttempts"`
	// Denials are claims refused for their data source (should be 0).
	Denials float64 `json:"denials"`
	// SidecarCPUSeconds is utime+stime over the fan-out; CPUMsPerClaim the
	// same per claim; SidecarCores the average cores it kept busy.
	SidecarCPUSeconds float64 `json:"sidecarCPUSeconds"`
	CPUMsPerClaim     float64 `json:"cpuMsPerClaim"`
	SidecarCores      float64 `json:"sidecarCores"`
	// ComponentCPUSeconds is the CPU time of every bed component over the
	// fan-out; MachineBusy the share of all cores busy (anything on the host).
	ComponentCPUSeconds map[string]float64 `json:"componentCPUSeconds"`
	MachineBusy         float64            `json:"machineBusy"`
	// VolumesChecked restored volumes hold the source's files (sizes; the
	// first one byte for byte).
	VolumesChecked int `json:"volumesChecked"`
	// KCMRequestsPerClaim are kube-controller-manager's API requests per
	// claim by HTTP method (binding claims to PVs is its work), and
	// KCMThrottledSeconds the total time they waited in its client-side
	// rate limiter.
	KCMRequestsPerClaim map[string]float64 `json:"kcmRequestsPerClaim,omitempty"`
	KCMThrottledSeconds float64            `json:"kcmThrottledSeconds"`
	// DeleteSeconds is how long deleting the namespaces took until every PV
	// was gone; DeleteRequests are the sidecar's requests meanwhile (it
	// deletes the volumes and PVs: reclaim policy Delete), per PV.
	DeleteSeconds  float64        `json:"deleteSeconds"`
	DeleteRequests []RequestCount `json:"deleteRequests"`
}

// fanout runs the fan-out scenario against a ready source.
func (b *bench) fanout(ctx context.Context, src *source) (FanoutResult, error) {
	logger := klog.FromContext(ctx)
	cfg := b.cfg
	res := FanoutResult{Claims: cfg.Claims, Namespaces: cfg.Namespaces}
	namespaces, err := b.c.createNumberedNamespaces(ctx, b.run, "bench-fanout", cfg.Namespaces)
	if err != nil {
		return res, err
	}
	grants, err := b.c.createGrants(ctx, src.namespace, "bench-fanout", namespaces)
	if err != nil {
		return res, err
	}
	cleaned := false
	defer func() {
		if !cleaned {
			b.cleanup(ctx, "fan-out", namespaces, src.namespace, grants)
		}
	}()

	obs, err := startObserver(ctx, b.c.kube, b.run)
	if err != nil {
		return res, err
	}
	defer obs.Stop()
	// Idle before: source provisioning and the grants' Events are done, and
	// the grants have reached the sidecar's index.
	before, _, err := b.settle(ctx)
	if err != nil {
		return res, err
	}
	kcmBefore, err := b.kcm.sample(ctx)
	if err != nil {
		logger.Error(err, "Reading kube-controller-manager's metrics; its figures are left out")
	}

	logger.Info("Fan-out: creating claims", "claims", cfg.Claims, "namespaces", cfg.Namespaces)
	start := time.Now()
	claims, err := b.c.createClaims(ctx, b.run, src.namespace, "restore", namespaces, cfg.Claims)
	if err != nil {
		return res, err
	}
	res.CreateSeconds = time.Since(start).Seconds()
	if err := obs.waitAll(ctx, uidsOf(claims), cfg.Timeout); err != nil {
		return res, fmt.Errorf("fan-out: %w", err)
	}
	logger.Info("Fan-out: all claims bound; waiting for the sidecar to go idle", "after", time.Since(start).Round(time.Millisecond))
	after, settled, err := b.settle(ctx)
	if err != nil {
		return res, err
	}
	res.Settled = settled
	if kcmBefore != nil {
		kcmAfter, err := b.kcm.sample(ctx)
		if err != nil {
			logger.Error(err, "Reading kube-controller-manager's metrics; its figures are left out")
		}
		res.KCMRequestsPerClaim, res.KCMThrottledSeconds = kcmDelta(kcmBefore, kcmAfter, cfg.Claims)
	}

	var toPV, toBound []time.Duration
	var lastPV, lastBound time.Time
	for i, c := range claims {
		pv, bound, handle := obs.times(c.uid)
		toPV = append(toPV, pv.Sub(c.sent))
		toBound = append(toBound, bound.Sub(c.sent))
		if pv.After(lastPV) {
			lastPV = pv
		}
		if bound.After(lastBound) {
			lastBound = bound
		}
		if err := checkRestored(b.volumeDir(handle), src.files, i == 0); err != nil {
			return res, fmt.Errorf("claim %s/%s: restored volume: %w", c.namespace, c.name, err)
		}
		res.VolumesChecked++
	}
	res.CreateToPV, res.CreateToBound = percentiles(toPV), percentiles(toBound)
	res.LastPVSeconds, res.LastBoundSeconds = lastPV.Sub(start).Seconds(), lastBound.Sub(start).Seconds()
	res.PVsPerSecond, res.BoundPerSecond = rate(cfg.Claims, lastPV.Sub(start)), rate(cfg.Claims, lastBound.Sub(start))

	res.Requests = requestDelta(before.metrics, after.metrics, cfg.Claims)
	res.RequestsPerClaim = perClient(res.Requests)
	res.FailedAttempts = after.metrics.sum(failedMetric, nil) - before.metrics.sum(failedMetric, nil)
	res.Denials = after.metrics.sum(denialsMetric, nil) - before.metrics.sum(denialsMetric, nil)
	res.SidecarCPUSeconds = after.proc.cpuSeconds - before.proc.cpuSeconds
	res.CPUMsPerClaim = 1000 * res.SidecarCPUSeconds / float64(cfg.Claims)
	res.SidecarCores = res.SidecarCPUSeconds / after.at.Sub(before.at).Seconds()
	res.ComponentCPUSeconds = map[string]float64{}
	for name, cpu := range after.components {
		if b0, ok := before.components[name]; ok {
			res.ComponentCPUSeconds[name] = cpu - b0
		}
	}
	res.MachineBusy = busyFraction(before.machine, after.machine)

	// Deleting the namespaces releases the PVs; the sidecar deletes them.
	// Waiting until it is idle again also leaves the next scenario a
	// sidecar whose client budget is not still spent on this one.
	delStart := time.Now()
	cleaned = true
	b.cleanup(ctx, "fan-out", namespaces, src.namespace, grants)
	res.DeleteSeconds = time.Since(delStart).Seconds()
	deleted, _, err := b.settle(ctx)
	if err != nil {
		return res, err
	}
	res.DeleteRequests = requestDelta(after.metrics, deleted.metrics, cfg.Claims)
	return res, nil
}

// failedMetric is the provision loop's counter of failed attempts.
const failedMetric = "controller_persistentvolumeclaim_provision_failed_total"

// cleanup deletes a scenario's namespaces and grants; a failure is logged,
// and the next scenario's cleanup of leftovers at start tries again.
func (b *bench) cleanup(ctx context.Context, what string, namespaces []string, srcNS string, grants []string) {
	logger := klog.FromContext(ctx)
	if ctx.Err() != nil {
		// Interrupted: clean up anyway, within bounds.
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(context.WithoutCancel(ctx), b.cfg.Timeout)
		defer cancel()
	}
	start := time.Now()
	if err := b.c.deleteGrants(ctx, srcNS, grants); err != nil {
		logger.Error(err, "Cleaning up", "scenario", what)
	}
	if err := b.c.deleteNamespaces(ctx, namespaces, b.cfg.Timeout); err != nil {
		logger.Error(err, "Cleaning up", "scenario", what)
		return
	}
	logger.Info("Cleaned up", "scenario", what, "duration", time.Since(start).Round(100*time.Millisecond))
}
