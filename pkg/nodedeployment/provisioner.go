package nodedeployment

import (
	"context"
	"fmt"

	"github.com/container-storage-interface/spec/lib/go/csi"
	v1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/klog/v2"
	"sigs.k8s.io/sig-storage-lib-external-provisioner/v10/controller"
)

// Inner is the provisioner a node's instance runs (*provisioner.Provisioner).
type Inner interface {
	controller.Provisioner
	controller.BlockProvisioner
	controller.DeletionGuard
	// HasCapacity is the CapacityCheck of Responsible.
	HasCapacity(ctx context.Context, claim *v1.PersistentVolumeClaim, class *storagev1.StorageClass, node *v1.Node) (bool, error)
}

// Provisioner is the provision loop's provisioner in node mode: Inner, for
// the claims of this node and the volumes accessible from it only.
type Provisioner struct {
	Inner
	node *Node
}

var (
	_ controller.Provisioner      = &Provisioner{}
	_ controller.Qualifier        = &Provisioner{}
	_ controller.BlockProvisioner = &Provisioner{}
	_ controller.DeletionGuard    = &Provisioner{}
)

// Wrap returns inner restricted to this node.
func (n *Node) Wrap(inner Inner) *Provisioner { return &Provisioner{Inner: inner, node: n} }

// ShouldProvision lets the loop skip, without an Event, the claims of other
// nodes: with several instances, only the one that provisions a claim may
// write Events about it. It is where an instance competes for an Immediate
// claim. When the check fails the claim is provisioned, so that the failure
// surfaces in an Event if it persists.
func (p *Provisioner) ShouldProvision(ctx context.Context, claim *v1.PersistentVolumeClaim) bool {
	ok, err := p.node.Responsible(ctx, claim, nil, p.Inner.HasCapacity)
	if err != nil {
		klog.FromContext(ctx).V(2).Info("Checking whether this node provisions the claim failed; trying to provision it", "claim", klog.KObj(claim), "err", err.Error())
		return true
	}
	return ok
}

// Provision checks the node again (ShouldProvision may have failed) and
// provisions the claims of this node.
func (p *Provisioner) Provision(ctx context.Context, opts controller.ProvisionOptions) (*v1.PersistentVolume, controller.ProvisioningState, error) {
	ok, err := p.node.Responsible(ctx, opts.PVC, opts.StorageClass, p.Inner.HasCapacity)
	if err != nil {
		return nil, controller.ProvisioningNoChange, fmt.Errorf("node check failed: %w", err)
	}
	if !ok {
		return nil, controller.ProvisioningNoChange, &controller.IgnoredError{
			Reason: fmt.Sprintf("not responsible for claim %s/%s: it is not assigned to node %q", opts.PVC.Namespace, opts.PVC.Name, p.node.cfg.NodeName)}
	}
	return p.Inner.Provision(ctx, opts)
}

// Delete deletes only volumes accessible from this node: every instance sees
// every released PV, and only the one beside the volume's driver may ask
// it. Without topology every volume counts as accessible, as upstream.
func (p *Provisioner) Delete(ctx context.Context, pv *v1.PersistentVolume) error {
	ok, err := p.node.Accessible(pv)
	if err != nil {
		return fmt.Errorf("checking the node affinity of PV %s: %w", pv.Name, err)
	}
	if !ok {
		return &controller.IgnoredError{Reason: fmt.Sprintf("PV %s was not provisioned on node %s", pv.Name, p.node.cfg.NodeName)}
	}
	return p.Inner.Delete(ctx, pv)
}

// Accessible reports whether the PV's node affinity admits this node's
// topology segment; a PV without affinity, or a node without topology,
// admits all.
func (n *Node) Accessible(pv *v1.PersistentVolume) (bool, error) {
	segment := n.Segment()
	if segment == nil || pv.Spec.NodeAffinity == nil || pv.Spec.NodeAffinity.Required == nil {
		return true, nil
	}
	return matchesNode(pv.Spec.NodeAffinity.Required, n.cfg.NodeName, segment)
}

// matchesNode reports whether a node with name and labels satisfies a node
// selector: any of its terms, each with all its expressions and fields (a
// term with neither matches nothing), as the scheduler reads it.
func matchesNode(sel *v1.NodeSelector, name string, nodeLabels map[string]string) (bool, error) {
	for _, term := range sel.NodeSelectorTerms {
		if len(term.MatchExpressions) == 0 && len(term.MatchFields) == 0 {
			continue
		}
		exprs, err := selectorOf(term.MatchExpressions)
		if err != nil {
			return false, err
		}
		fields, err := selectorOf(term.MatchFields)
		if err != nil {
			return false, err
		}
		if exprs.Matches(labels.Set(nodeLabels)) && fields.Matches(labels.Set{"metadata.name": name}) {
			return true, nil
		}
	}
	return false, nil
}

var operators = map[v1.NodeSelectorOperator]selection.Operator{
	v1.NodeSelectorOpIn: selection.In, v1.NodeSelectorOpNotIn: selection.NotIn,
	v1.NodeSelectorOpExists: selection.Exists, v1.NodeSelectorOpDoesNotExist: selection.DoesNotExist,
	v1.NodeSelectorOpGt: selection.GreaterThan, v1.NodeSelectorOpLt: selection.LessThan,
}

func selectorOf(reqs []v1.NodeSelectorRequirement) (labels.Selector, error) {
	sel := labels.NewSelector()
	for _, r := range reqs {
		op, ok := operators[r.Operator]
		if !ok {
			return nil, fmt.Errorf("node selector operator %q", r.Operator)
		}
		req, err := labels.NewRequirement(r.Key, op, r.Values)
		if err != nil {
			return nil, err
		}
		sel = sel.Add(*req)
	}
	return sel, nil
}

// NodeInfo asks the driver's node service for its node ID and topology.
func NodeInfo(ctx context.Context, client csi.NodeClient) (*csi.NodeGetInfoResponse, error) {
	info, err := client.NodeGetInfo(ctx, &csi.NodeGetInfoRequest{})
	if err != nil {
		return nil, fmt.Errorf("NodeGetInfo: %w", err)
	}
	return info, nil
}
