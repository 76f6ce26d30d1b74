package bench

import (
	"context"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// observer timestamps, as they arrive on a watch, the PVs made for the
// bench's claims (PV ADD, keyed by the claim UID in claimRef: the sidecar
// sets claimRef before it creates the PV) and the claims turning Bound.
// creationTimestamp has one-second granularity; a watch is what gives
// millisecond latencies.
type observer struct {
	mu sync.Mutex
	// pvAdded and bound hold the first time each was seen, by claim UID.
	pvAdded map[types.UID]time.Time
	bound   map[types.UID]time.Time
	// pvHandle is the volume handle of each claim's PV, to check its files.
	pvHandle map[types.UID]string
	stop     context.CancelFunc
}

// startObserver starts a PV informer (all PVs) and a claim informer limited
// to the bench's label, and returns once both have synced.
func startObserver(ctx context.Context, client kubernetes.Interface, runLabel string) (*observer, error) {
	o := &observer{pvAdded: map[types.UID]time.Time{}, bound: map[types.UID]time.Time{}, pvHandle: map[types.UID]string{}}
	ctx, o.stop = context.WithCancel(ctx)
	pvFactory := informers.NewSharedInformerFactory(client, 0)
	claimFactory := informers.NewSharedInformerFactoryWithOptions(client, 0,
		informers.WithTweakListOptions(func(lo *metav1.ListOptions) { lo.LabelSelector = runLabelKey + "=" + runLabel }))
	pvs := pvFactory.Core().V1().PersistentVolumes().Informer()
	claims := claimFactory.Core().V1().PersistentVolumeClaims().Informer()
	if _, err := pvs.AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: o.pvAdd}); err != nil {
		o.stop()
		return nil, err
	}
	if _, err := claims.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    o.claimSeen,
		UpdateFunc: func(_, cur any) { o.claimSeen(cur) },
	}); err != nil {
		o.stop()
		return nil, err
	}
	pvFactory.Start(ctx.Done())
	claimFactory.Start(ctx.Done())
	for _, synced := range []cache.InformerSynced{pvs.HasSynced, claims.HasSynced} {
		if !cache.WaitForCacheSync(ctx.Done(), synced) {
			o.stop()
			return nil, fmt.Errorf("PV and claim watches did not sync: %w", context.Cause(ctx))
		}
	}
	return o, nil
}

func (o *observer) pvAdd(obj any) {
	now := time.Now()
	pv, ok := obj.(*corev1.PersistentVolume)
	if !ok || pv.Spec.ClaimRef == nil {
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	uid := pv.Spec.ClaimRef.UID
	if _, seen := o.pvAdded[uid]; !seen {
		o.pvAdded[uid] = now
		if pv.Spec.CSI != nil {
			o.pvHandle[uid] = pv.Spec.CSI.VolumeHandle
		}
	}
}

func (o *observer) claimSeen(obj any) {
	now := time.Now()
	claim, ok := obj.(*corev1.PersistentVolumeClaim)
	if !ok || claim.Status.Phase != corev1.ClaimBound {
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if _, seen := o.bound[claim.UID]; !seen {
		o.bound[claim.UID] = now
	}
}

// Stop ends the watches.
func (o *observer) Stop() { o.stop() }

// times returns when each claim's PV appeared and when it was bound; a claim
// missing from a map has not got there.
func (o *observer) times(uid types.UID) (pv, bound time.Time, handle string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.pvAdded[uid], o.bound[uid], o.pvHandle[uid]
}

// progress counts how many of uids have a PV and how many are bound.
func (o *observer) progress(uids []types.UID) (pvs, bound int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, u := range uids {
		if _, ok := o.pvAdded[u]; ok {
			pvs++
		}
		if _, ok := o.bound[u]; ok {
			bound++
		}
	}
	return pvs, bound
}

// waitAll waits until every claim in uids has a PV and is bound, or timeout.
func (o *observer) waitAll(ctx context.Context, uids []types.UID, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		pvs, bound := o.progress(uids)
		if pvs == len(uids) && bound == len(uids) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("after %s only %d of %d claims have a PV and %d are bound: %w", timeout, pvs, len(uids), bound, ctx.Err())
		case <-tick.C:
		}
	}
}
