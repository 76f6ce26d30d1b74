package nodedeployment

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	v1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"
)

// AnnSelectedNode is where the scheduler, or an instance winning an
// Immediate claim, names the node a claim's volume is made on.
const AnnSelectedNode = "volume.kubernetes.io/selected-node"

// CapacityCheck tells whether the driver has room now for a claim's volume
// on node; (*provisioner.Provisioner).HasCapacity.
type CapacityCheck func(ctx context.Context, claim *v1.PersistentVolumeClaim, class *storagev1.StorageClass, node *v1.Node) (bool, error)

// Responsible reports whether this instance provisions the claim now: its
// node is the selected one. A claim of a class with Immediate binding and
// no selected node is competed for first (with --node-deployment-immediate-
// binding): after a delay, unless another node was selected meanwhile, this
// instance selects its own node if the class's allowed topologies admit it
// and the driver has room; it then reports false, and the claim comes back
// with the selection made (the update is an informer event). An error means
// the check could not be made. class nil is read from the cache.
func (n *Node) Responsible(ctx context.Context, claim *v1.PersistentVolumeClaim, class *storagev1.StorageClass, hasCapacity CapacityCheck) (bool, error) {
	switch claim.Annotations[AnnSelectedNode] {
	case n.cfg.NodeName:
		return true, nil
	case "":
	default:
		return false, nil // another node's
	}
	if class == nil {
		if claim.Spec.StorageClassName == nil || n.cfg.Classes == nil {
			return false, nil
		}
		var err error
		if class, err = n.cfg.Classes.Get(*claim.Spec.StorageClassName); err != nil {
			return false, fmt.Errorf("reading StorageClass %q: %w", *claim.Spec.StorageClassName, err)
		}
	}
	if !n.cfg.ImmediateBinding || class.VolumeBindingMode == nil || *class.VolumeBindingMode != storagev1.VolumeBindingImmediate {
		return false, nil // late binding: the scheduler selects
	}
	logger := klog.FromContext(ctx).WithValues("claim", klog.KObj(claim), "node", n.cfg.NodeName)
	if segment := n.Segment(); segment != nil && len(class.AllowedTopologies) > 0 && !admits(class.AllowedTopologies, segment) {
		logger.V(5).Info("Not competing for claim: the class's allowed topologies do not admit this node", "segment", segment)
		return false, nil
	}
	if err := n.becomeOwner(klog.NewContext(ctx, logger), claim, class, hasCapacity); err != nil {
		return false, fmt.Errorf("claim %s/%s: %w", claim.Namespace, claim.Name, err)
	}
	return false, nil
}

// becomeOwner waits its turn and then selects this node for the claim,
// unless another node was selected meanwhile or the driver has no room. A
// conflicting update (another instance wrote first) starts a longer wait.
func (n *Node) becomeOwner(ctx context.Context, claim *v1.PersistentVolumeClaim, class *storagev1.StorageClass, hasCapacity CapacityCheck) error {
	logger := klog.FromContext(ctx)
	attempt := n.limiter.Attempts(claim.UID)
	delay := n.limiter.When(claim.UID)
	logger.V(5).Info("Competing for claim", "delay", delay, "attempt", attempt, "resourceVersion", claim.ResourceVersion)
	// Check the cache while waiting, so a claim another instance won ends
	// the wait early; often when the base delay is short, rarely when long.
	tick := time.NewTicker(max(n.cfg.BaseDelay/100, 10*time.Millisecond))
	defer tick.Stop()
	timer := time.NewTimer(delay)
	defer timer.Stop()
	var current *v1.PersistentVolumeClaim
	for done := false; !done; {
		var lost bool
		var err error
		select {
		case <-ctx.Done():
			return errors.New("stopped while waiting to select this node")
		case <-timer.C:
			done = true
			current, lost, err = n.current(claim)
		case <-tick.C:
			current, lost, err = n.current(claim)
			done = lost
		}
		if err != nil {
			return err
		}
		if lost {
			n.limiter.Forget(claim.UID) // a reschedule starts over
			logger.V(5).Info("Another node was selected for the claim", "selectedNode", current.Annotations[AnnSelectedNode])
			return nil
		}
	}
	// As late as possible: asking the driver is what an attempt costs. A
	// check that fails does not stop the attempt: provisioning then fails
	// the same way and says why in an Event, which no instance would write
	// if all gave up silently.
	if hasCapacity != nil {
		ok, err := hasCapacity(ctx, current, class, n.node)
		switch {
		case err != nil:
			logger.V(3).Info("Capacity check failed; selecting this node anyway", "err", err.Error())
		case !ok:
			logger.V(5).Info("Driver has no room for the claim on this node now; not selecting it")
			return nil
		}
	}
	update := current.DeepCopy()
	if update.Annotations == nil {
		update.Annotations = map[string]string{}
	}
	update.Annotations[AnnSelectedNode] = n.cfg.NodeName
	if _, err := n.cfg.Client.CoreV1().PersistentVolumeClaims(update.Namespace).Update(ctx, update, metav1.UpdateOptions{}); err != nil {
		if apierrors.IsConflict(err) {
			logger.V(3).Info("Claim changed while selecting this node; trying again")
			return n.becomeOwner(ctx, claim, class, hasCapacity)
		}
		return fmt.Errorf("selecting node %q: %w", n.cfg.NodeName, err)
	}
	n.limiter.Forget(claim.UID)
	logger.V(2).Info("Selected this node for the claim")
	return nil
}

// current reads the claim from the cache: lost is set when another node is
// selected. A claim deleted or replaced meanwhile is an error.
func (n *Node) current(claim *v1.PersistentVolumeClaim) (current *v1.PersistentVolumeClaim, lost bool, err error) {
	current, err = n.cfg.Claims.Lister().PersistentVolumeClaims(claim.Namespace).Get(claim.Name)
	if err != nil {
		return nil, false, fmt.Errorf("reading the claim: %w", err)
	}
	if current.UID != claim.UID {
		return nil, false, errors.New("claim was replaced")
	}
	selected := current.Annotations[AnnSelectedNode]
	return current, selected != "" && selected != n.cfg.NodeName, nil
}

// admits reports whether a node with segment may get a volume of a class
// with these allowed topologies: some term whose every expression holds a
// key of the segment with its value among the values, as CreateVolume's
// requirements for the node would be computed.
func admits(allowed []v1.TopologySelectorTerm, segment map[string]string) bool {
	for _, term := range allowed {
		ok := true
		for _, e := range term.MatchLabelExpressions {
			if v, has := segment[e.Key]; !has || !slices.Contains(e.Values, v) {
				ok = false
				break
			}
		}
		if ok {
			return true
		}
	}
	return false
}

// claimDeleted forgets a deleted claim's attempts.
func (n *Node) claimDeleted(obj any) {
	if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = tomb.Obj
	}
	if claim, ok := obj.(*v1.PersistentVolumeClaim); ok {
		n.limiter.Forget(claim.UID)
	}
}
