package bench

import (
	"context"
	"fmt"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"
)

// GrantResult is one grant-latency scenario: Claims claims created before
// any grant allows them, then one grant for them all.
type GrantResult struct {
	Claims     int `json:"claims"`
	Namespaces int `json:"namespaces"`
	// DeniedBeforeGrant counts the sidecar's no_grant refusals before the
	// grant (its own metric, incremented as it refuses); EventsBeforeGrant
	// the claims whose ReferenceGrantMissing Event had arrived by then
	// (Events go out later, at the events client's rate).
	DeniedBeforeGrant float64 `json:"deniedBeforeGrant"`
	EventsBeforeGrant int     `json:"eventsBeforeGrant"`
	// WaitSeconds is how long the bench waited for those refusals.
	WaitSeconds float64 `json:"waitSeconds"`
	// PVsBeforeGrant must be 0: a refused claim never reaches the driver.
	PVsBeforeGrant int `json:"pvsBeforeGrant"`
	// GrantToPV and GrantToBound are per claim, from the grant's create request.
	GrantToPV    Percentiles `json:"grantToPV"`
	GrantToBound Percentiles `json:"grantToBound"`
	// Requests are the sidecar's requests per claim from the grant until
	// the last claim was bound (Events still going out are not all in).
	Requests []RequestCount `json:"requests"`
}

// reasonGrantMissing is the sidecar's Event reason for a claim without a grant.
const reasonGrantMissing = "ReferenceGrantMissing"

// grantLatency runs the grant scenario against a ready source.
func (b *bench) grantLatency(ctx context.Context, src *source) (GrantResult, error) {
	logger := klog.FromContext(ctx)
	cfg := b.cfg
	res := GrantResult{Claims: cfg.GrantClaims, Namespaces: cfg.GrantNamespaces}
	namespaces, err := b.c.createNumberedNamespaces(ctx, b.run, "bench-late", cfg.GrantNamespaces)
	if err != nil {
		return res, err
	}
	var grants []string
	defer func() { b.cleanup(ctx, "grant latency", namespaces, src.namespace, grants) }()

	obs, err := startObserver(ctx, b.c.kube, b.run)
	if err != nil {
		return res, err
	}
	defer obs.Stop()
	before, err := b.sc.sample(ctx)
	if err != nil {
		return res, err
	}
	claims, err := b.c.createClaims(ctx, b.run, src.namespace, "late", namespaces, cfg.GrantClaims)
	if err != nil {
		return res, err
	}
	uids := uidsOf(claims)

	// Wait until the sidecar has refused every claim (so the grant's requeue
	// is what is measured, not a first attempt), or DenialWait.
	waitStart := time.Now()
	deadline := waitStart.Add(cfg.DenialWait)
	for {
		now, err := b.sc.sample(ctx)
		if err != nil {
			return res, err
		}
		res.DeniedBeforeGrant = now.metrics.sum(denialsMetric, map[string]string{"reason": "no_grant"}) -
			before.metrics.sum(denialsMetric, map[string]string{"reason": "no_grant"})
		if res.EventsBeforeGrant, err = b.claimsWithEvent(ctx, namespaces, uids, reasonGrantMissing); err != nil {
			return res, err
		}
		if int(res.DeniedBeforeGrant) >= len(claims) || res.EventsBeforeGrant == len(claims) || time.Now().After(deadline) {
			break
		}
		select {
		case <-ctx.Done():
			return res, ctx.Err()
		case <-time.After(pollInterval):
		}
	}
	res.WaitSeconds = time.Since(waitStart).Seconds()
	res.PVsBeforeGrant, _ = obs.progress(uids)
	logger.Info("Grant latency: claims refused; creating the grant", "denied", res.DeniedBeforeGrant, "events", res.EventsBeforeGrant, "claims", len(claims))

	atGrant, err := b.sc.sample(ctx)
	if err != nil {
		return res, err
	}
	granted := time.Now()
	grants, err = b.c.createGrants(ctx, src.namespace, "bench-late", namespaces)
	if err != nil {
		return res, err
	}
	if err := obs.waitAll(ctx, uids, cfg.Timeout); err != nil {
		return res, fmt.Errorf("grant latency: %w", err)
	}
	if end, err := b.sc.sample(ctx); err == nil {
		res.Requests = requestDelta(atGrant.metrics, end.metrics, len(claims))
	}
	var toPV, toBound []time.Duration
	for _, c := range claims {
		pv, bound, _ := obs.times(c.uid)
		toPV = append(toPV, pv.Sub(granted))
		toBound = append(toBound, bound.Sub(granted))
	}
	res.GrantToPV, res.GrantToBound = percentiles(toPV), percentiles(toBound)
	return res, nil
}

// claimsWithEvent counts the claims among uids that have an Event with reason.
func (b *bench) claimsWithEvent(ctx context.Context, namespaces []string, uids []types.UID, reason string) (int, error) {
	want := map[types.UID]bool{}
	for _, u := range uids {
		want[u] = true
	}
	seen := map[types.UID]bool{}
	for _, ns := range namespaces {
		list, err := b.c.kube.CoreV1().Events(ns).List(ctx, metav1.ListOptions{FieldSelector: fields.OneTermEqualSelector("reason", reason).String()})
		if err != nil {
			return 0, fmt.Errorf("listing Events in %s: %w", ns, err)
		}
		for _, e := range list.Items {
			if want[e.InvolvedObject.UID] {
				seen[e.InvolvedObject.UID] = true
			}
		}
	}
	return len(seen), nil
}
