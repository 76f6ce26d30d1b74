package protection

import (
	"context"
	"encoding/json"
	"fmt"

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
	patch, _ := json.Marshal(map[string]any{
		"metadata": map[string]any{"annotations": map[string]string{HeldPolicyAnnotation: string(content.Spec.DeletionPolicy)},
			"resourceVersion": content.ResourceVersion},
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
// That takes two writes, so the hold annotation stays on until the content
// is deleted: a sidecar that stops between them (found by the soak: a
// leader exiting on a driver restart) leaves the content still indexed as
// held, and the next leader deletes it; without the annotation nothing would
// look at it again and the content and its backend snapshot would stay.
func (c *Controller) releaseContent(ctx context.Context, content *snapshotv1.VolumeSnapshotContent, snapshotGone bool) error {
	policy := content.Annotations[HeldPolicyAnnotation]
	deleteIt := snapshotGone && policy == string(snapshotv1.VolumeSnapshotContentDelete)
	if deleteIt && content.DeletionTimestamp != nil && string(content.Spec.DeletionPolicy) == policy &&
		content.Annotations[beingDeletedAnnotation] == "yes" {
		return nil // released and deleted already; csi-snapshotter finishes it
	}
	anns := map[string]any{}
	switch {
	case deleteIt:
		anns[beingDeletedAnnotation] = "yes"
	case snapshotGone:
		anns[HeldPolicyAnnotation] = nil
		anns[beingDeletedAnnotation] = "yes"
	default:
		anns[HeldPolicyAnnotation] = nil
	}
	patch, _ := json.Marshal(map[string]any{
		"metadata": map[string]any{"annotations": anns, "resourceVersion": content.ResourceVersion},
		"spec":     map[string]any{"deletionPolicy": policy},
	})
	contents := c.cfg.SnapClient.SnapshotV1().VolumeSnapshotContents()
	if _, err := contents.Patch(ctx, content.Name, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("putting back the deletion policy of VolumeSnapshotContent %s: %w", content.Name, err)
	}
	logger := klog.FromContext(ctx).WithValues("content", content.Name, "deletionPolicy", policy)
	if !deleteIt {
		logger.V(4).Info("Released VolumeSnapshotContent")
		return nil
	}
	if content.DeletionTimestamp != nil {
		return nil // deleted already (before this release's patch)
	}
	if err := contents.Delete(ctx, content.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("deleting VolumeSnapshotContent %s of a deleted snapshot: %w", content.Name, err)
	}
	logger.Info("Deleted VolumeSnapshotContent of a snapshot deleted while restores were in flight")
	return nil
}
