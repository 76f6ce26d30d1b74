package protection

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"

	snapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"

	"github.com/crossns/external-provisioner/pkg/datasource"
	"github.com/crossns/external-provisioner/pkg/events"
)

const (
	// HeldPolicyAnnotation on a VolumeSnapshotContent records the deletion
	// policy it had before this sidecar held it at Retain while restores
	// from its snapshot were in flight. Its presence means "held".
	HeldPolicyAnnotation = "provisioner.crossns.io/held-deletion-policy"
	// HeldContentFinalizer is on a VolumeSnapshotContent while it is held.
	// Retain alone stops csi-snapshotter from deleting the backend snapshot,
	// but not the snapshot-controller from deleting the content: a delete
	// decided from its cache just before the hold landed (the snapshot being
	// deleted with a cross-namespace restore starting) removed the content,
	// held at Retain, and left the backend snapshot for ever (found by the
	// soak). With the finalizer the content stays until the release has put
	// its policy back and csi-snapshotter has deleted the backend snapshot.
	HeldContentFinalizer = "provisioner.crossns.io/held-content-protection"
	// beingDeletedAnnotation is external-snapshotter's: csi-snapshotter deletes
	// the backend snapshot of a deleted content only when it is set.
	beingDeletedAnnotation = "snapshot.storage.kubernetes.io/volumesnapshot-being-deleted"
	// heldIndex indexes held contents by their snapshot's "namespace/name".
	heldIndex = "crossns.io/held-for-snapshot"
)

// HoldRule is the RBAC rule the content hold needs, for messages.
const HoldRule = `apiGroups: ["snapshot.storage.k8s.io"], resources: ["volumesnapshotcontents"], verbs: ["patch", "delete"]`

func indexHeldBySnapshot(obj any) ([]string, error) {
	content, ok := obj.(*snapshotv1.VolumeSnapshotContent)
	if !ok || content.Annotations[HeldPolicyAnnotation] == "" {
		return nil, nil
	}
	ref := content.Spec.VolumeSnapshotRef
	return []string{ref.Namespace + "/" + ref.Name}, nil
}

// enqueueIfHeld looks at the snapshot of every held content, so a hold left
// by a crash is released when nothing needs it.
func (c *Controller) enqueueIfHeld(obj any) {
	keys, _ := indexHeldBySnapshot(obj)
	for _, k := range keys {
		c.queue.Add(datasource.SnapshotKind + "/" + k)
	}
}

// heldContents returns the contents this sidecar holds for snapshot ns/name.
func (c *Controller) heldContents(ns, name string) []*snapshotv1.VolumeSnapshotContent {
	caches := c.snapshots.Load()
	if caches == nil || caches.contentIndex == nil {
		return nil
	}
	objs, _ := caches.contentIndex.ByIndex(heldIndex, ns+"/"+name)
	out := make([]*snapshotv1.VolumeSnapshotContent, 0, len(objs))
	for _, o := range objs {
		out = append(out, o.(*snapshotv1.VolumeSnapshotContent))
	}
	return out
}

// holdContent sets the bound content of the source snapshot to Retain, the
// original policy recorded, so neither the snapshot-controller nor
// csi-snapshotter deletes the backend snapshot while it is restored from.
// Without RBAC for it, restores go on unprotected and one Warning says which
// rule to add.
func (c *Controller) holdContent(ctx context.Context, claim *v1.PersistentVolumeClaim, src *datasource.Source) error {
	snap, ok := src.Object.(*snapshotv1.VolumeSnapshot)
	caches := c.snapshots.Load()
	if !ok || caches == nil || snap.Status == nil || snap.Status.BoundVolumeSnapshotContentName == nil {
		return nil
	}
	if caches.contents == nil {
		return nil // contents are not cached (RBAC): snapshotapi said so once
	}
	content, err := caches.contents.Get(*snap.Status.BoundVolumeSnapshotContentName)
	if apierrors.IsNotFound(err) {
		return nil // the resolver checked it a moment ago; nothing left to hold
	}
	if err != nil {
		return err
	}
	if content.Annotations[HeldPolicyAnnotation] != "" || content.Spec.DeletionPolicy != snapshotv1.VolumeSnapshotContentDelete {
		return nil // held already, or Retain keeps the data anyway
	}
	if content.DeletionTimestamp != nil {
		return nil // too late: nothing can be added to an object being deleted
	}
	patch, _ := json.Marshal(map[string]any{
		"metadata": map[string]any{"annotations": map[string]string{HeldPolicyAnnotation: string(content.Spec.DeletionPolicy)},
			"finalizers": append(slices.Clone(content.Finalizers), HeldContentFinalizer), "resourceVersion": content.ResourceVersion},
		"spec": map[string]any{"deletionPolicy": snapshotv1.VolumeSnapshotContentRetain},
	})
	_, err = c.cfg.SnapClient.SnapshotV1().VolumeSnapshotContents().Patch(ctx, content.Name, types.MergePatchType, patch, metav1.PatchOptions{})
	if apierrors.IsForbidden(err) {
		c.warnHoldForbidden(ctx, claim, src, err)
		return nil
	}
	if err != nil {
		return fmt.Errorf("holding VolumeSnapshotContent %s of %s at Retain: %w", content.Name, src.Ref, err)
	}
	klog.FromContext(ctx).V(4).Info("Held VolumeSnapshotContent while restores are in flight", "content", content.Name, "source", src.Ref.String())
	return nil
}

func (c *Controller) warnHoldForbidden(ctx context.Context, claim *v1.PersistentVolumeClaim, src *datasource.Source, err error) {
	if c.holdForbidden.Swap(true) {
		return
	}
	msg := fmt.Sprintf("restoring from %s without holding its VolumeSnapshotContent: if the snapshot is deleted meanwhile, the restore fails. "+
		"Let the provisioner's ClusterRole have %s", src.Ref, HoldRule)
	klog.FromContext(ctx).Error(err, "WARNING: "+msg)
	if c.cfg.Recorder != nil && claim != nil {
		c.cfg.Recorder.Event(claim, v1.EventTypeWarning, events.SnapshotHoldForbidden, msg)
	}
}

// releaseContent puts the recorded deletion policy back. When the snapshot is
// gone or being deleted, the owner asked for the data to go: the content is
// deleted here (the snapshot-controller never deletes a content whose
// snapshot is gone), marked so csi-snapshotter deletes the backend snapshot.
// The hold (annotation and finalizer) stays until the content is deleted and
// csi-snapshotter has deleted the backend snapshot (it then clears
// status.snapshotHandle): a sidecar that stops between the writes (found by
// the soak: a leader exiting on a driver restart) leaves the content still
// indexed as held, and the next leader finishes. Each call makes the next
// step; content updates bring the controller back for the following one.
func (c *Controller) releaseContent(ctx context.Context, content *snapshotv1.VolumeSnapshotContent, snapshotGone bool) error {
	policy := content.Annotations[HeldPolicyAnnotation]
	contents := c.cfg.SnapClient.SnapshotV1().VolumeSnapshotContents()
	logger := klog.FromContext(ctx).WithValues("content", content.Name, "deletionPolicy", policy)
	deleteIt := snapshotGone && policy == string(snapshotv1.VolumeSnapshotContentDelete)
	marked := string(content.Spec.DeletionPolicy) == policy && content.Annotations[beingDeletedAnnotation] == "yes"
	switch {
	case !deleteIt:
		// One write ends the hold: the policy back, annotation and
		// finalizer gone (and, for a Retain content of a deleted snapshot,
		// the mark csi-snapshotter reads).
		anns := map[string]any{HeldPolicyAnnotation: nil}
		if snapshotGone {
			anns[beingDeletedAnnotation] = "yes"
		}
		if err := c.patchContent(ctx, content, anns, policy, without(content.Finalizers, HeldContentFinalizer)); err != nil {
			return err
		}
		logger.V(4).Info("Released VolumeSnapshotContent")
		return nil
	case !marked:
		// The policy back and the mark, still held.
		if err := c.patchContent(ctx, content, map[string]any{beingDeletedAnnotation: "yes"}, policy, content.Finalizers); err != nil {
			return err
		}
		if content.DeletionTimestamp != nil {
			return nil // csi-snapshotter deletes the backend snapshot now
		}
	case content.DeletionTimestamp != nil:
		if content.Status != nil && content.Status.SnapshotHandle != nil {
			return nil // csi-snapshotter is deleting the backend snapshot
		}
		if err := c.patchContent(ctx, content, map[string]any{HeldPolicyAnnotation: nil}, policy, without(content.Finalizers, HeldContentFinalizer)); err != nil {
			return err
		}
		logger.V(4).Info("Released deleted VolumeSnapshotContent: its backend snapshot is gone")
		return nil
	}
	if err := contents.Delete(ctx, content.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("deleting VolumeSnapshotContent %s of a deleted snapshot: %w", content.Name, err)
	}
	logger.Info("Deleted VolumeSnapshotContent of a snapshot deleted while restores were in flight")
	return nil
}

// patchContent writes a content's annotations (nil removes one), deletion
// policy and finalizers, if its resourceVersion is still the one read. A
// content that is gone needs nothing.
func (c *Controller) patchContent(ctx context.Context, content *snapshotv1.VolumeSnapshotContent, anns map[string]any, policy string, finalizers []string) error {
	if finalizers == nil {
		finalizers = []string{}
	}
	patch, _ := json.Marshal(map[string]any{
		"metadata": map[string]any{"annotations": anns, "finalizers": finalizers, "resourceVersion": content.ResourceVersion},
		"spec":     map[string]any{"deletionPolicy": policy},
	})
	_, err := c.cfg.SnapClient.SnapshotV1().VolumeSnapshotContents().Patch(ctx, content.Name, types.MergePatchType, patch, metav1.PatchOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("releasing VolumeSnapshotContent %s (deletion policy %s): %w", content.Name, policy, err)
	}
	return nil
}
