package capacity

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/container-storage-interface/spec/lib/go/csi"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/klog/v2"
)

// resync recomputes the segments and queues every key that should have an
// object and every key that has one, so objects of classes and segments that
// went away are deleted by syncKey.
func (c *Controller) resync(ctx context.Context) error {
	segments := map[string]map[string]string{"": nil}
	if c.cfg.Topology != nil {
		list, err := c.cfg.Topology.Segments()
		if err != nil {
			return fmt.Errorf("listing topology segments: %w", err)
		}
		segments = make(map[string]map[string]string, len(list))
		for _, s := range list {
			segments[segmentID(s)] = s
		}
	}
	c.mu.Lock()
	c.segments = segments
	c.mu.Unlock()

	classes, err := c.classes.List(labels.Everything())
	if err != nil {
		return fmt.Errorf("listing StorageClasses: %w", err)
	}
	n := 0
	for _, class := range classes {
		if !c.publishes(class) {
			continue
		}
		for id := range segments {
			c.queue.Add(key{class: class.Name, segment: id})
			n++
		}
	}
	for _, obj := range c.capacities.List() {
		if sc, ok := obj.(*storagev1.CSIStorageCapacity); ok && sc.Namespace == c.cfg.Namespace {
			c.queue.Add(keyOf(sc))
		}
	}
	klog.FromContext(ctx).V(4).Info("Resynced storage capacity", "segments", len(segments), "wanted", n)
	return nil
}

// publishes says whether capacity is published for a class: the driver's,
// and late-bound unless immediate binding was asked for too.
func (c *Controller) publishes(class *storagev1.StorageClass) bool {
	if class.Provisioner != c.cfg.DriverName {
		return false
	}
	if c.cfg.ImmediateBinding {
		return true
	}
	return class.VolumeBindingMode != nil && *class.VolumeBindingMode == storagev1.VolumeBindingWaitForFirstConsumer
}

// wanted returns the class and segment of a key that should have an object.
func (c *Controller) wanted(k key) (*storagev1.StorageClass, map[string]string, bool) {
	c.mu.Lock()
	segment, ok := c.segments[k.segment]
	c.mu.Unlock()
	if !ok {
		return nil, nil, false
	}
	class, err := c.classes.Get(k.class)
	if err != nil || !c.publishes(class) {
		return nil, nil, false
	}
	return class, segment, true
}

// syncKey makes the published objects of one key match the driver: one
// object with the current capacity when the key is wanted, none otherwise.
func (c *Controller) syncKey(ctx context.Context, k key) error {
	logger := klog.FromContext(ctx).WithValues("storageClass", k.class, "segment", k.segment)
	existing, err := c.objects(k)
	if err != nil {
		return err
	}
	class, segment, ok := c.wanted(k)
	if !ok {
		return c.delete(ctx, existing)
	}
	available, maxSize, err := c.getCapacity(ctx, class, segment)
	if err != nil {
		return err
	}
	if len(existing) == 0 {
		sc := &storagev1.CSIStorageCapacity{
			ObjectMeta: metav1.ObjectMeta{
				GenerateName: "csisc-",
				Namespace:    c.cfg.Namespace,
				Labels:       map[string]string{DriverLabel: c.cfg.DriverName, ManagedByLabel: c.cfg.ManagedBy},
			},
			StorageClassName:  class.Name,
			Capacity:          available,
			MaximumVolumeSize: maxSize,
		}
		// Without topology the selector is empty: accessible from every
		// node (a nil one would be accessible from none).
		sc.NodeTopology = &metav1.LabelSelector{MatchLabels: maps.Clone(segment)}
		if c.cfg.Owner != nil {
			sc.OwnerReferences = []metav1.OwnerReference{*c.cfg.Owner}
		}
		created, err := c.cfg.Client.StorageV1().CSIStorageCapacities(c.cfg.Namespace).Create(ctx, sc, metav1.CreateOptions{})
		if err != nil {
			return fmt.Errorf("creating CSIStorageCapacity for StorageClass %q: %w", class.Name, err)
		}
		// The informer will deliver it too; storing it now keeps the next
		// sync of this key from creating a second one before that.
		_ = c.capacities.Add(created)
		logger.V(3).Info("Published storage capacity", "object", klog.KObj(created), "capacity", available)
		return nil
	}
	// Keep the oldest name, delete duplicates (e.g. left by two leaders).
	slices.SortFunc(existing, func(a, b *storagev1.CSIStorageCapacity) int { return strings.Compare(a.Name, b.Name) })
	if err := c.delete(ctx, existing[1:]); err != nil {
		return err
	}
	cur := existing[0]
	if sameQuantity(cur.Capacity, available) && sameQuantity(cur.MaximumVolumeSize, maxSize) && c.ownedByUs(cur) {
		return nil
	}
	upd := cur.DeepCopy()
	upd.Capacity, upd.MaximumVolumeSize = available, maxSize
	if c.cfg.Owner != nil && !c.ownedByUs(cur) {
		// Adopted objects (upstream's, or of a previous pod with level 0)
		// follow this sidecar's owner from now on.
		upd.OwnerReferences = []metav1.OwnerReference{*c.cfg.Owner}
	}
	updated, err := c.cfg.Client.StorageV1().CSIStorageCapacities(c.cfg.Namespace).Update(ctx, upd, metav1.UpdateOptions{})
	if err != nil {
		return fmt.Errorf("updating CSIStorageCapacity %s/%s: %w", cur.Namespace, cur.Name, err)
	}
	_ = c.capacities.Update(updated)
	logger.V(4).Info("Updated storage capacity", "object", klog.KObj(updated), "capacity", available)
	return nil
}

// objects are the published objects of a key in our namespace.
func (c *Controller) objects(k key) ([]*storagev1.CSIStorageCapacity, error) {
	objs, err := c.capacities.ByIndex(byKeyIndex, k.String())
	if err != nil {
		return nil, fmt.Errorf("reading CSIStorageCapacity cache: %w", err)
	}
	var out []*storagev1.CSIStorageCapacity
	for _, o := range objs {
		if sc, ok := o.(*storagev1.CSIStorageCapacity); ok && sc.Namespace == c.cfg.Namespace {
			out = append(out, sc)
		}
	}
	return out, nil
}

func (c *Controller) delete(ctx context.Context, objs []*storagev1.CSIStorageCapacity) error {
	for _, sc := range objs {
		err := c.cfg.Client.StorageV1().CSIStorageCapacities(sc.Namespace).Delete(ctx, sc.Name,
			metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &sc.UID}})
		if err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("deleting CSIStorageCapacity %s/%s: %w", sc.Namespace, sc.Name, err)
		}
		_ = c.capacities.Delete(sc)
		klog.FromContext(ctx).V(3).Info("Deleted storage capacity", "object", klog.KObj(sc), "storageClass", sc.StorageClassName)
	}
	return nil
}

func (c *Controller) ownedByUs(sc *storagev1.CSIStorageCapacity) bool {
	if c.cfg.Owner == nil {
		return true // nothing to set; never strip others' references
	}
	return slices.ContainsFunc(sc.OwnerReferences, func(r metav1.OwnerReference) bool { return r.UID == c.cfg.Owner.UID })
}

// getCapacity asks the driver how much can be provisioned for a class in a
// segment.
func (c *Controller) getCapacity(ctx context.Context, class *storagev1.StorageClass, segment map[string]string) (*resource.Quantity, *resource.Quantity, error) {
	if c.cfg.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.cfg.Timeout)
		defer cancel()
	}
	resp, err := c.cfg.CSI.GetCapacity(ctx, getCapacityRequest(class, segment))
	if err != nil {
		return nil, nil, fmt.Errorf("GetCapacity for StorageClass %q in segment %v: %w", class.Name, segment, err)
	}
	available := resource.NewQuantity(resp.GetAvailableCapacity(), resource.BinarySI)
	var maxSize *resource.Quantity
	if resp.GetMaximumVolumeSize() != nil {
		maxSize = resource.NewQuantity(resp.GetMaximumVolumeSize().GetValue(), resource.BinarySI)
	}
	return available, maxSize, nil
}

// getCapacityRequest is the GetCapacity request for a class in a segment,
// as upstream external-provisioner (v5.0 and later) sends it:
//   - the class's parameters as they are, csi.storage.k8s.io/ keys included
//     (unlike CreateVolume's): drivers written for upstream see the same map;
//   - no volume capabilities (optional in the CSI spec): capacity is assumed
//     independent of them, and an invented access type or mode would mislead
//     drivers that validate them;
//   - the segment as accessible topology. Without topology (segment nil)
//     none: the CSI spec forbids it unless the driver advertises
//     VOLUME_ACCESSIBILITY_CONSTRAINTS. Upstream sends a topology without
//     segments when a driver registers no topology keys on its nodes.
func getCapacityRequest(class *storagev1.StorageClass, segment map[string]string) *csi.GetCapacityRequest {
	req := &csi.GetCapacityRequest{Parameters: maps.Clone(class.Parameters)}
	if segment != nil {
		req.AccessibleTopology = &csi.Topology{Segments: maps.Clone(segment)}
	}
	return req
}

func sameQuantity(a, b *resource.Quantity) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Cmp(*b) == 0
}
