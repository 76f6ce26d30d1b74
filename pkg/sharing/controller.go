package sharing

import (
	"context"
	"fmt"
	"strings"
	"time"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"

	"github.com/crossns/external-provisioner/pkg/referencegrant"
)

// Provisioner annotations the PV controller puts on claims it hands to an
// external provisioner; they name the driver that serves the claim.
var provisionerAnnotations = []string{"volume.kubernetes.io/storage-provisioner", "volume.beta.kubernetes.io/storage-provisioner"}

// addHandlers watches what can change a source's holders (subordinate PVs,
// claims waiting to share it) and what can change a waiting claim's
// decision (the source claim and its PV). Resyncs and no-op updates (same
// resourceVersion) are skipped: they change neither.
func (s *Sharer) addHandlers() error {
	_, err := s.cfg.Claims.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) { s.claimChanged(nil, claimOf(obj)) },
		UpdateFunc: func(old, cur any) {
			o, c := claimOf(old), claimOf(cur)
			if o != nil && c != nil && o.ResourceVersion == c.ResourceVersion {
				return
			}
			s.claimChanged(o, c)
		},
		DeleteFunc: func(obj any) {
			if c := claimOf(obj); c != nil {
				s.forget(c)
				s.claimChanged(c, nil)
			}
		},
	})
	if err != nil {
		return fmt.Errorf("watching claims for sharing: %w", err)
	}
	_, err = s.cfg.Volumes.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) { s.volumeChanged(nil, volumeOf(obj)) },
		UpdateFunc: func(old, cur any) {
			o, c := volumeOf(old), volumeOf(cur)
			if o != nil && c != nil && o.ResourceVersion == c.ResourceVersion {
				return
			}
			s.volumeChanged(o, c)
		},
		DeleteFunc: func(obj any) {
			if pv := volumeOf(obj); pv != nil {
				s.mu.Lock()
				delete(s.revoked, pv.UID)
				s.mu.Unlock()
				s.volumeChanged(pv, nil)
			}
		},
	})
	if err != nil {
		return fmt.Errorf("watching PVs for sharing: %w", err)
	}
	return nil
}

func claimOf(obj any) *v1.PersistentVolumeClaim {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	c, _ := obj.(*v1.PersistentVolumeClaim)
	return c
}

func volumeOf(obj any) *v1.PersistentVolume {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	pv, _ := obj.(*v1.PersistentVolume)
	return pv
}

// claimChanged: a claim that shares (or waits to share) may add or remove a
// holder of its source's volume, or ask to expand; a held claim's volume is
// re-examined; a claim others wait to share may now decide them differently.
func (s *Sharer) claimChanged(old, cur *v1.PersistentVolumeClaim) {
	for _, c := range []*v1.PersistentVolumeClaim{old, cur} {
		if c == nil {
			continue
		}
		if from, ok, err := ShareFrom(c); ok && err == nil {
			if src, err := s.claims.PersistentVolumeClaims(from.Namespace).Get(from.Name); err == nil && src.Spec.VolumeName != "" {
				s.queue.Add(src.Spec.VolumeName)
			}
		}
		if c.Spec.VolumeName != "" && hasFinalizer(c.Finalizers) {
			s.queue.Add(c.Spec.VolumeName)
		}
	}
	if sourceChanged(old, cur) {
		c := cur
		if c == nil {
			c = old
		}
		s.requeueWaiting(Key{Namespace: c.Namespace, Name: c.Name})
		if c.Spec.VolumeName != "" {
			s.queue.Add(c.Spec.VolumeName) // the annotation may have been revoked
		}
	}
}

// sourceChanged reports whether a claim changed in a way that may decide
// claims waiting to share it differently.
func sourceChanged(old, cur *v1.PersistentVolumeClaim) bool {
	if old == nil || cur == nil {
		return true
	}
	return old.Annotations[SharingAnnotation] != cur.Annotations[SharingAnnotation] ||
		old.Status.Phase != cur.Status.Phase || old.Spec.VolumeName != cur.Spec.VolumeName ||
		(old.DeletionTimestamp == nil) != (cur.DeletionTimestamp == nil)
}

// volumeChanged: a subordinate's coming or going changes its source's
// holders; a source PV's size, modes or binding may decide waiting claims
// differently.
func (s *Sharer) volumeChanged(old, cur *v1.PersistentVolume) {
	for _, pv := range []*v1.PersistentVolume{old, cur} {
		if pv == nil {
			continue
		}
		if owner := pv.Annotations[SharedVolumeAnnotation]; owner != "" && IsSubordinate(pv) {
			s.queue.Add(owner)
		}
		if hasFinalizer(pv.Finalizers) {
			s.queue.Add(pv.Name)
		}
	}
	if !volumeRelevant(old, cur) {
		return
	}
	for _, pv := range []*v1.PersistentVolume{old, cur} {
		if pv != nil && pv.Spec.ClaimRef != nil {
			s.requeueWaiting(Key{Namespace: pv.Spec.ClaimRef.Namespace, Name: pv.Spec.ClaimRef.Name})
		}
	}
}

func volumeRelevant(old, cur *v1.PersistentVolume) bool {
	if old == nil || cur == nil {
		return true
	}
	oc, cc := old.Spec.Capacity[v1.ResourceStorage], cur.Spec.Capacity[v1.ResourceStorage]
	return oc.Cmp(cc) != 0 || old.Status.Phase != cur.Status.Phase ||
		fmt.Sprint(old.Spec.AccessModes, old.Spec.ClaimRef != nil) != fmt.Sprint(cur.Spec.AccessModes, cur.Spec.ClaimRef != nil)
}

// requeueWaiting puts the claims waiting to share from back into the loop.
func (s *Sharer) requeueWaiting(from Key) {
	if s.cfg.Requeue == nil {
		return
	}
	claims, err := byIndex[*v1.PersistentVolumeClaim](s.claimIndex, ShareFromIndex, from.String())
	if err != nil {
		utilruntime.HandleError(err)
		return
	}
	var waiting []*v1.PersistentVolumeClaim
	for _, c := range claims {
		if isWaiting(c) {
			waiting = append(waiting, c)
		}
	}
	if len(waiting) > 0 {
		klog.V(4).InfoS("Requeued claims waiting to share a volume", "source", from.String(), "claims", len(waiting))
		s.cfg.Requeue.Requeue(waiting...)
	}
}

// isWaiting: the claim is not bound to a volume and not being deleted.
func isWaiting(c *v1.PersistentVolumeClaim) bool {
	return c.Spec.VolumeName == "" && c.Status.Phase == v1.ClaimPending && c.DeletionTimestamp == nil
}

// GrantsChanged requeues the claims waiting to share a source in the
// grant's namespace that the change concerns, and re-examines the shared
// sources there (a revoked grant is told to both sides).
func (s *Sharer) GrantsChanged(c referencegrant.Change) {
	for _, key := range s.claimIndex.ListIndexFuncValues(ShareFromIndex) {
		ns, name, _ := strings.Cut(key, "/")
		if !c.All && ns != c.Namespace {
			continue
		}
		claims, err := byIndex[*v1.PersistentVolumeClaim](s.claimIndex, ShareFromIndex, key)
		if err != nil {
			utilruntime.HandleError(err)
			return
		}
		var waiting []*v1.PersistentVolumeClaim
		for _, cl := range claims {
			if isWaiting(cl) && cl.Namespace != ns && c.Affects(grantRef(cl.Namespace, Key{Namespace: ns, Name: name})) {
				waiting = append(waiting, cl)
			}
		}
		if len(waiting) > 0 && s.cfg.Requeue != nil {
			s.cfg.Requeue.Requeue(waiting...)
		}
	}
	for _, owner := range s.volumeIndex.ListIndexFuncValues(SharedVolumeIndex) {
		pv, err := s.volumes.Get(owner)
		if err != nil || c.All || (pv.Spec.ClaimRef != nil && pv.Spec.ClaimRef.Namespace == c.Namespace) {
			s.queue.Add(owner)
		}
	}
}

// Run releases sources nothing shares any more, with workers goroutines,
// until ctx ends. Every held PV and every subordinate is enqueued by the
// informers' initial adds, so a restart resumes.
func (s *Sharer) Run(ctx context.Context, workers int) {
	defer utilruntime.HandleCrash()
	defer s.queue.ShutDown()
	logger := klog.FromContext(ctx).WithName("sharing")
	ctx = klog.NewContext(ctx, logger)
	if !cache.WaitForNamedCacheSync("shared-source-protection", ctx.Done(), s.synced...) {
		return
	}
	for range workers {
		go wait.UntilWithContext(ctx, s.worker, time.Second)
	}
	<-ctx.Done()
}

func (s *Sharer) worker(ctx context.Context) {
	for s.processNextWorkItem(ctx) {
	}
}

// processNextWorkItem syncs one source PV. Done always; Forget on success
// (its backoff restarts); AddRateLimited on a transient error (an API write
// failed), so it is retried with backoff.
func (s *Sharer) processNextWorkItem(ctx context.Context) bool {
	name, quit := s.queue.Get()
	if quit {
		return false
	}
	defer s.queue.Done(name)
	if err := s.sync(ctx, name); err != nil {
		klog.FromContext(ctx).Error(err, "Releasing a shared source; retrying", "pv", name)
		s.queue.AddRateLimited(name)
		return true
	}
	s.queue.Forget(name)
	return true
}

// sync keeps the volume of PV name held while a subordinate exists or a
// claim may be bound to it now, tells both sides what changed, and
// releases the source claim and PV when nothing shares the volume any more.
func (s *Sharer) sync(ctx context.Context, name string) error {
	defer s.locks.Lock(name)()
	pv, err := s.volumes.Get(name)
	if err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	if apierrors.IsNotFound(err) {
		pv = nil
	}
	if pv != nil && s.cfg.Responsible != nil {
		mine, err := s.cfg.Responsible(pv)
		if err != nil {
			return fmt.Errorf("deciding whether this instance looks after PersistentVolume %s: %w", name, err)
		}
		if !mine {
			return nil // another node's instance holds, releases and tells
		}
	}
	source := s.sourceClaim(pv)
	subs, err := byIndex[*v1.PersistentVolume](s.volumeIndex, SharedVolumeIndex, name)
	if err != nil {
		return err
	}
	pending := s.pendingUsers(source)
	if len(subs) > 0 || len(pending) > 0 {
		logger := klog.FromContext(ctx)
		logger.V(5).Info("Shared volume in use", "pv", name, "subordinates", len(subs), "waiting", pending)
		if len(subs) > 0 && pv != nil {
			// Put back what an admin removed: the volume is still shared.
			if source != nil {
				if err := s.claimFinalizer(ctx, source, true); err != nil {
					return err
				}
			}
			if err := s.volumeFinalizer(ctx, pv, true); err != nil {
				return err
			}
		}
		s.tell(source, subs)
		return nil
	}
	held, err := byIndex[*v1.PersistentVolumeClaim](s.claimIndex, HeldClaimIndex, name)
	if err != nil {
		return err
	}
	for _, c := range held {
		if err := s.claimFinalizer(ctx, c, false); err != nil {
			return err
		}
		s.forget(c)
	}
	if pv != nil {
		if err := s.volumeFinalizer(ctx, pv, false); err != nil {
			return err
		}
	}
	if len(held) > 0 || (pv != nil && hasFinalizer(pv.Finalizers)) {
		klog.FromContext(ctx).V(2).Info("Released shared source: no claim shares its volume any more", "pv", name)
	}
	return nil
}

// sourceClaim is the claim pv is bound to, if it exists (same UID).
func (s *Sharer) sourceClaim(pv *v1.PersistentVolume) *v1.PersistentVolumeClaim {
	if pv == nil || pv.Spec.ClaimRef == nil {
		return nil
	}
	ref := pv.Spec.ClaimRef
	c, err := s.claims.PersistentVolumeClaims(ref.Namespace).Get(ref.Name)
	if err != nil || (ref.UID != "" && c.UID != ref.UID) {
		return nil
	}
	return c
}

// pendingUsers names the claims of this driver not yet bound to a
// subordinate that may share source now: the whole decision passes (or
// grants cannot be read). A claim refused for any reason — no grant, too
// large, the source being deleted — holds nothing: only a claim allowed now
// can delay the owner's delete.
func (s *Sharer) pendingUsers(source *v1.PersistentVolumeClaim) []string {
	if source == nil || source.DeletionTimestamp != nil {
		return nil
	}
	claims, err := byIndex[*v1.PersistentVolumeClaim](s.claimIndex, ShareFromIndex, Key{Namespace: source.Namespace, Name: source.Name}.String())
	if err != nil {
		return []string{"unknown: " + err.Error()}
	}
	var out []string
	for _, c := range claims {
		if c.DeletionTimestamp != nil || !s.forDriver(c) {
			continue
		}
		if c.Spec.VolumeName != "" {
			if _, err := s.volumes.Get(c.Spec.VolumeName); err == nil {
				continue // bound: its PV, if a subordinate, is counted as one
			}
		}
		if _, err := s.decide(c); err != nil {
			if se, ok := AsError(err); ok && !se.Undecided {
				continue
			}
		}
		out = append(out, klog.KObj(c).String())
	}
	return out
}

func (s *Sharer) forDriver(c *v1.PersistentVolumeClaim) bool {
	for _, a := range provisionerAnnotations {
		if c.Annotations[a] == s.cfg.DriverName {
			return true
		}
	}
	return false
}

// forget drops what was told about a claim that is gone or released.
func (s *Sharer) forget(c *v1.PersistentVolumeClaim) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.waiting, c.UID)
	delete(s.expansion, c.UID)
}
