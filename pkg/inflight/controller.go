package inflight

import (
	"context"
	"fmt"
	"time"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	coreinformers "k8s.io/client-go/informers/core/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"
)

// Settler ends a recorded call whose claim no longer wants its volume: it
// repeats the idempotent CreateVolume to learn the volume, deletes it and
// removes the record. An error means "try again later" (pkg/provisioner).
type Settler interface {
	Settle(ctx context.Context, r Record) error
}

// Rescan is how often every record is looked at again, so none is forgotten
// when an event was missed.
const Rescan = time.Minute

// Controller decides which records are over. A record is done when its PV
// exists (the volume is owned); it is orphaned when its claim is gone (or was
// replaced by another of the same name), and is then handed to the Settler.
// A record whose claim still exists is left to the provision loop, which
// repeats the call or settles it when the claim is refused.
type Controller struct {
	store   *Store
	settler Settler
	// claims and volumes are the shared informers' listers.
	claims  corelisters.PersistentVolumeClaimLister
	volumes corelisters.PersistentVolumeLister
	// queue holds claim UIDs of records to look at.
	queue  workqueue.TypedRateLimitingInterface[types.UID]
	synced []cache.InformerSynced
}

// NewController watches claims (a deleted claim may orphan its record) and
// PVs (a created PV ends its record).
func NewController(store *Store, settler Settler, claims coreinformers.PersistentVolumeClaimInformer, volumes coreinformers.PersistentVolumeInformer) (*Controller, error) {
	c := &Controller{
		store: store, settler: settler,
		claims: claims.Lister(), volumes: volumes.Lister(),
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.NewTypedItemExponentialFailureRateLimiter[types.UID](time.Second, 2*time.Minute),
			workqueue.TypedRateLimitingQueueConfig[types.UID]{Name: "inflight"}),
		synced: []cache.InformerSynced{claims.Informer().HasSynced, volumes.Informer().HasSynced},
	}
	_, err := claims.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		UpdateFunc: func(_, cur any) {
			if claim, ok := cur.(*v1.PersistentVolumeClaim); ok && claim.DeletionTimestamp != nil {
				c.enqueueIfRecorded(claim.UID)
			}
		},
		DeleteFunc: func(obj any) {
			if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = d.Obj
			}
			if claim, ok := obj.(*v1.PersistentVolumeClaim); ok {
				c.enqueueIfRecorded(claim.UID)
			}
		},
	})
	if err != nil {
		return nil, fmt.Errorf("watching claims: %w", err)
	}
	_, err = volumes.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    c.volumeSeen,
		UpdateFunc: func(_, cur any) { c.volumeSeen(cur) },
	})
	if err != nil {
		return nil, fmt.Errorf("watching volumes: %w", err)
	}
	return c, nil
}

func (c *Controller) enqueueIfRecorded(uid types.UID) {
	if _, ok := c.store.Get(uid); ok {
		c.queue.Add(uid)
	}
}

// volumeSeen ends the record of the claim a new PV is bound to: from now on
// the PV owns the volume and its reclaim policy decides its fate.
func (c *Controller) volumeSeen(obj any) {
	pv, ok := obj.(*v1.PersistentVolume)
	if !ok || pv.Spec.ClaimRef == nil {
		return
	}
	if r, ok := c.store.Get(pv.Spec.ClaimRef.UID); ok && r.PVName == pv.Name {
		c.store.Remove(r.ClaimUID)
	}
}

// Run settles records until ctx ends. Records loaded at start are looked at
// once the caches are synced, and all of them again every Rescan.
func (c *Controller) Run(ctx context.Context, workers int) {
	defer utilruntime.HandleCrash()
	defer c.queue.ShutDown()
	if !cache.WaitForCacheSync(ctx.Done(), c.synced...) {
		return
	}
	klog.FromContext(ctx).V(2).Info("In-flight record controller started", "records", len(c.store.List()), "durable", c.store.Durable())
	go wait.UntilWithContext(ctx, func(context.Context) {
		for _, r := range c.store.List() {
			c.queue.Add(r.ClaimUID)
		}
	}, Rescan)
	for range workers {
		go wait.UntilWithContext(ctx, c.worker, time.Second)
	}
	<-ctx.Done()
}

func (c *Controller) worker(ctx context.Context) {
	for c.processNext(ctx) {
	}
}

// processNext handles one UID: Done always; Forget on success; AddRateLimited
// when the driver could not settle it yet.
func (c *Controller) processNext(ctx context.Context) bool {
	uid, quit := c.queue.Get()
	if quit {
		return false
	}
	defer c.queue.Done(uid)
	if err := c.sync(ctx, uid); err != nil {
		klog.FromContext(ctx).Error(err, "Settling a CreateVolume call in flight; will retry", "claimUID", uid)
		c.queue.AddRateLimited(uid)
		return true
	}
	c.queue.Forget(uid)
	return true
}

// Orphaned reports whether a record's claim no longer wants the volume:
// (false, nil) while the claim exists, not being deleted, with the same UID.
func (c *Controller) orphaned(r Record) (bool, error) {
	claim, err := c.claims.PersistentVolumeClaims(r.Namespace).Get(r.Claim)
	if apierrors.IsNotFound(err) {
		return true, nil
	}
	if err != nil {
		return false, err
	}
	return claim.UID != r.ClaimUID || claim.DeletionTimestamp != nil, nil
}

func (c *Controller) sync(ctx context.Context, uid types.UID) error {
	r, ok := c.store.Get(uid)
	if !ok {
		return nil
	}
	if r.PVName != "" {
		pv, err := c.volumes.Get(r.PVName)
		if err == nil && pv.Spec.ClaimRef != nil && pv.Spec.ClaimRef.UID == uid {
			c.store.Remove(uid)
			return nil
		}
		if err != nil && !apierrors.IsNotFound(err) {
			return err
		}
	}
	orphaned, err := c.orphaned(r)
	if err != nil || !orphaned {
		return err
	}
	logger := klog.FromContext(ctx).WithValues("claim", klog.KRef(r.Namespace, r.Claim), "claimUID", uid, "volume", r.Request.GetName())
	logger.Info("Claim is gone while its CreateVolume may still be running; repeating the call to delete what it made")
	return c.settler.Settle(klog.NewContext(ctx, logger), r)
}
