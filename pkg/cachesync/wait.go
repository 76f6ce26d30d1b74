// Package cachesync waits until informer caches have synced before work
// starts, and says which cache holds the start up. Work that reads an empty
// cache decides wrongly (a volume looks detached, a node looks gone, a grant
// looks missing), so nothing may start before every cache it reads is full.
package cachesync

import (
	"context"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/klog/v2"
)

// Cache is one cache that work reads.
type Cache struct {
	// Name says which cache it is in logs ("VolumeAttachments").
	Name string
	// HasSynced reports whether the cache holds its initial list (or, for a
	// cache that may never exist, whether it was decided that it does not).
	HasSynced func() bool
}

const (
	// pollInterval is how often HasSynced is asked, as client-go's
	// WaitForCacheSync does.
	pollInterval = 100 * time.Millisecond
	// defaultSlowAfter is how long a start may take before the caches still
	// syncing are logged, and then how often again.
	defaultSlowAfter = 10 * time.Second
)

// Wait returns true once every cache has synced, or false when ctx ends
// first. Every defaultSlowAfter it logs the caches still syncing, so a start
// that hangs names its cause (an RBAC rule missing for one kind, say).
func Wait(ctx context.Context, caches ...Cache) bool {
	return waitFor(ctx, defaultSlowAfter, caches)
}

func waitFor(ctx context.Context, slowAfter time.Duration, caches []Cache) bool {
	logger := klog.FromContext(ctx)
	start := time.Now()
	nextReport := start.Add(slowAfter)
	err := wait.PollUntilContextCancel(ctx, pollInterval, true, func(context.Context) (bool, error) {
		names := pending(caches)
		if len(names) == 0 {
			return true, nil
		}
		if now := time.Now(); !now.Before(nextReport) {
			logger.Info("Waiting for caches to sync before starting work", "pending", names, "waited", now.Sub(start).Round(time.Second))
			nextReport = now.Add(slowAfter)
		}
		return false, nil
	})
	if err != nil {
		logger.V(2).Info("Stopped waiting for caches to sync", "pending", pending(caches), "err", err)
		return false
	}
	logger.V(2).Info("Caches synced", "caches", len(caches), "duration", time.Since(start).Round(time.Millisecond))
	return true
}

// pending returns the names of the caches that have not synced yet.
func pending(caches []Cache) []string {
	var names []string
	for _, c := range caches {
		if !c.HasSynced() {
			names = append(names, c.Name)
		}
	}
	return names
}
