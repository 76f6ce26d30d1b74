package sharing

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"
)

// hold puts SourceFinalizer on the source claim and its PV, so neither is
// removed while it is shared: deleting the claim then leaves it Terminating
// (soft-deleted) until the last subordinate is gone. Both writes are guarded
// by resourceVersion and retried on conflict with a fresh read.
func (s *Sharer) hold(ctx context.Context, source *v1.PersistentVolumeClaim, pv *v1.PersistentVolume) error {
	defer s.locks.Lock(pv.Name)()
	if err := s.claimFinalizer(ctx, source, true); err != nil {
		return err
	}
	return s.volumeFinalizer(ctx, pv, true)
}

// claimFinalizer adds (or removes) SourceFinalizer on claim with an update:
// the verb upstream's ClusterRole grants on claims (it grants no patch).
// Adding to a claim being deleted is refused by kube-apiserver, so it is
// not tried: a source being deleted is never shared anew.
func (s *Sharer) claimFinalizer(ctx context.Context, claim *v1.PersistentVolumeClaim, add bool) error {
	if slices.Contains(claim.Finalizers, SourceFinalizer) == add || (add && claim.DeletionTimestamp != nil) {
		return nil
	}
	cur := claim
	first := true
	err := onConflict(func() error {
		if !first {
			fresh, err := s.cfg.Client.CoreV1().PersistentVolumeClaims(claim.Namespace).Get(ctx, claim.Name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			if fresh.UID != claim.UID {
				return apierrors.NewNotFound(v1.Resource("persistentvolumeclaims"), claim.Name)
			}
			cur = fresh
		}
		first = false
		fins, changed := withFinalizer(cur.Finalizers, add)
		if !changed || (add && cur.DeletionTimestamp != nil) {
			return nil
		}
		upd := cur.DeepCopy()
		upd.Finalizers = fins
		_, err := s.cfg.Client.CoreV1().PersistentVolumeClaims(upd.Namespace).Update(ctx, upd, metav1.UpdateOptions{})
		return err
	})
	if apierrors.IsNotFound(err) && !add {
		return nil
	}
	if err != nil {
		return fmt.Errorf("updating the finalizers of PersistentVolumeClaim %s/%s: %w", claim.Namespace, claim.Name, err)
	}
	klog.FromContext(ctx).V(4).Info("Shared source finalizer", "claim", klog.KObj(claim), "added", add)
	return nil
}

// volumeFinalizer adds (or removes) SourceFinalizer on pv with a merge
// patch carrying its resourceVersion (the PV rule grants patch, not update).
func (s *Sharer) volumeFinalizer(ctx context.Context, pv *v1.PersistentVolume, add bool) error {
	if slices.Contains(pv.Finalizers, SourceFinalizer) == add || (add && pv.DeletionTimestamp != nil) {
		return nil
	}
	cur := pv
	first := true
	err := onConflict(func() error {
		if !first {
			fresh, err := s.cfg.Client.CoreV1().PersistentVolumes().Get(ctx, pv.Name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			if fresh.UID != pv.UID {
				return apierrors.NewNotFound(v1.Resource("persistentvolumes"), pv.Name)
			}
			cur = fresh
		}
		first = false
		fins, changed := withFinalizer(cur.Finalizers, add)
		if !changed || (add && cur.DeletionTimestamp != nil) {
			return nil
		}
		patch, err := finalizerPatch(cur.ResourceVersion, fins)
		if err != nil {
			return err
		}
		_, err = s.cfg.Client.CoreV1().PersistentVolumes().Patch(ctx, cur.Name, types.MergePatchType, patch, metav1.PatchOptions{})
		return err
	})
	if apierrors.IsNotFound(err) && !add {
		return nil
	}
	if err != nil {
		return fmt.Errorf("patching the finalizers of PersistentVolume %s: %w", pv.Name, err)
	}
	klog.FromContext(ctx).V(4).Info("Shared source finalizer", "pv", pv.Name, "added", add)
	return nil
}

// withFinalizer returns fins with SourceFinalizer added or removed, and
// whether that changed anything.
func withFinalizer(fins []string, add bool) ([]string, bool) {
	has := slices.Contains(fins, SourceFinalizer)
	switch {
	case add && !has:
		return append(slices.Clone(fins), SourceFinalizer), true
	case !add && has:
		return slices.DeleteFunc(slices.Clone(fins), func(f string) bool { return f == SourceFinalizer }), true
	}
	return fins, false
}

// finalizerPatch is a JSON merge patch that sets the finalizers, failing
// with a conflict when the object changed since resourceVersion.
func finalizerPatch(resourceVersion string, fins []string) ([]byte, error) {
	if fins == nil {
		fins = []string{}
	}
	return json.Marshal(map[string]any{"metadata": map[string]any{"resourceVersion": resourceVersion, "finalizers": fins}})
}

// conflictAttempts bounds the fresh reads after a write conflict: a source
// is written by its owner and by the PV controller, rarely at once.
const conflictAttempts = 5

// onConflict runs write until it does not fail with a conflict, at most
// conflictAttempts times (write reads the object again after the first).
func onConflict(write func() error) error {
	var err error
	for range conflictAttempts {
		if err = write(); !apierrors.IsConflict(err) {
			return err
		}
	}
	return err
}
