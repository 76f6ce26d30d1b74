package protection

import (
	"context"
	"fmt"
	"strings"

	snapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/klog/v2"

	"github.com/crossns/external-provisioner/pkg/datasource"
)

// Provisioner annotations the PV controller puts on claims it hands to an
// external provisioner; they name the driver that serves the claim.
var provisionerAnnotations = []string{"volume.kubernetes.io/storage-provisioner", "volume.beta.kubernetes.io/storage-provisioner"}

// sync releases a source that nothing may use any more: its content hold
// first (the data is then the owner's to delete), then its finalizer.
func (c *Controller) sync(ctx context.Context, key string) error {
	kind, ns, name, err := splitKey(key)
	if err != nil {
		return nil // malformed keys never become valid
	}
	ref := datasource.Ref{Kind: kind, Namespace: ns, Name: name}
	if kind == datasource.SnapshotKind {
		ref.Group = datasource.SnapshotGroup
	}
	if kind == datasource.SnapshotKind {
		// A snapshot missing from a cache still filling is not a deleted
		// snapshot: deciding now could delete a held content.
		if caches := c.snapshots.Load(); caches != nil && !caches.hasSynced() {
			return fmt.Errorf("snapshot caches are not synced yet")
		}
	}
	obj, err := c.source(kind, ns, name)
	if err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	var m metav1.Object
	if obj != nil && err == nil {
		m, _ = meta(obj)
	}
	protected := m != nil && hasFinalizer(m, kind)
	held := c.heldContents(ns, name)
	if !protected && len(held) == 0 {
		return nil
	}
	// Protect waits while a release is decided, so a claim arriving now is
	// either seen here as a user or protects the source again afterwards.
	defer c.locks.Lock(key)()
	c.mu.Lock()
	_, released := c.released[key]
	c.mu.Unlock()
	if released && len(held) == 0 {
		return nil // removed already; the cache has not caught up
	}
	var deleted *metav1.Time
	if m != nil {
		deleted = m.GetDeletionTimestamp()
	}
	if user, why := c.inUse(ctx, key, ref, deleted); user {
		klog.FromContext(ctx).V(5).Info("Data source still in use", "source", key, "by", why)
		return nil
	}
	snapshotGone := m == nil || m.GetDeletionTimestamp() != nil
	for _, content := range held {
		if err := c.releaseContent(ctx, content, snapshotGone); err != nil {
			return err
		}
	}
	if protected && !released {
		fins := without(m.GetFinalizers(), FinalizerOf(kind))
		if err := c.writeFinalizers(ctx, kind, m, fins); err != nil && !apierrors.IsNotFound(err) {
			return err
		}
		c.mu.Lock()
		c.released[key] = struct{}{}
		c.mu.Unlock()
	}
	c.mu.Lock()
	delete(c.protected, key)
	c.mu.Unlock()
	klog.FromContext(ctx).V(4).Info("Released data source", "source", key)
	return nil
}

// inUse reports whether anything may still need the source: a recorded call
// in flight, or a pending claim of this driver that may use it now — in the
// source's namespace, or allowed by a grant at this moment, and, when the
// source's deletion was requested (deleted), made before that: a later claim
// is refused (datasource.ClaimedBeforeDelete) and must not keep the owner's
// delete waiting. A claim whose grant cannot be read keeps the source
// (nothing is decided on a guess).
func (c *Controller) inUse(ctx context.Context, key string, ref datasource.Ref, deleted *metav1.Time) (bool, string) {
	if c.cfg.Records != nil && c.cfg.Records.HoldsSource(key) {
		return true, "a CreateVolume call in flight"
	}
	users, err := c.claimIndex.ByIndex(SourceIndex, key)
	if err != nil {
		klog.FromContext(ctx).Error(err, "Looking up claims of a source; keeping it", "source", key)
		return true, "unknown"
	}
	for _, u := range users {
		claim := u.(*v1.PersistentVolumeClaim)
		if claim.Status.Phase != v1.ClaimPending || claim.DeletionTimestamp != nil || !c.forDriver(claim) ||
			!datasource.ClaimedBeforeDelete(claim, deleted) {
			continue
		}
		if ref.CrossNamespace(claim) {
			if c.cfg.Grants == nil {
				continue
			}
			if _, err := c.cfg.Grants.Authorize(claim, ref); err != nil {
				if de, ok := datasource.AsError(err); ok && !de.Undecided {
					continue // not allowed now: it cannot hold the source
				}
			}
		}
		return true, klog.KObj(claim).String()
	}
	return false, ""
}

// forDriver reports whether the PV controller handed the claim to this driver.
func (c *Controller) forDriver(claim *v1.PersistentVolumeClaim) bool {
	for _, a := range provisionerAnnotations {
		if claim.Annotations[a] == c.cfg.DriverName {
			return true
		}
	}
	return false
}

func (c *Controller) source(kind, ns, name string) (any, error) {
	switch kind {
	case datasource.ClaimKind:
		return c.claims.PersistentVolumeClaims(ns).Get(name)
	case datasource.SnapshotKind:
		caches := c.snapshots.Load()
		if caches == nil {
			return nil, nil
		}
		var snap *snapshotv1.VolumeSnapshot
		snap, err := caches.snapshots.VolumeSnapshots(ns).Get(name)
		if err != nil {
			return nil, err
		}
		return snap, nil
	}
	return nil, nil
}

// writeFinalizers sets the finalizers of the source m (a
// *v1.PersistentVolumeClaim or *snapshotv1.VolumeSnapshot, as read) to fins
// with an update guarded by m's resourceVersion, so a concurrent change is
// never lost: the verb upstream's ClusterRole grants on both (it grants no
// patch on them).
func (c *Controller) writeFinalizers(ctx context.Context, kind string, m metav1.Object, fins []string) error {
	var err error
	switch obj := m.(type) {
	case *v1.PersistentVolumeClaim:
		obj = obj.DeepCopy()
		obj.Finalizers = fins
		_, err = c.cfg.Client.CoreV1().PersistentVolumeClaims(obj.Namespace).Update(ctx, obj, metav1.UpdateOptions{})
	case *snapshotv1.VolumeSnapshot:
		obj = obj.DeepCopy()
		obj.Finalizers = fins
		_, err = c.cfg.SnapClient.SnapshotV1().VolumeSnapshots(obj.Namespace).Update(ctx, obj, metav1.UpdateOptions{})
	default:
		return fmt.Errorf("source %s %s/%s is a %T", kind, m.GetNamespace(), m.GetName(), m)
	}
	if err != nil {
		return fmt.Errorf("updating finalizers of %s %s/%s: %w", kind, m.GetNamespace(), m.GetName(), err)
	}
	return nil
}

func splitKey(key string) (kind, ns, name string, err error) {
	parts := strings.SplitN(key, "/", 3)
	if len(parts) != 3 {
		return "", "", "", fmt.Errorf("malformed source key %q", key)
	}
	return parts[0], parts[1], parts[2], nil
}
