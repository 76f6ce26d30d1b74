package provisioner

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"google.golang.org/grpc/codes"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/sig-storage-lib-external-provisioner/v10/controller"

	"github.com/crossns/external-provisioner/pkg/events"
)

// TestCreateVolumeErrorState checks how each failure of CreateVolume tells
// the provision loop to go on: retry the same call (InBackground), give the
// node back to the scheduler (Reschedule) or stop (Finished).
func TestCreateVolumeErrorState(t *testing.T) {
	tests := []struct {
		name string
		// answer is the driver's failure
		answer createFunc
		// selectedNode: the claim waits for first consumer and has a node
		selectedNode bool
		want         controller.ProvisioningState
	}{
		{name: "DeadlineExceeded: driver may still be working", answer: createFails(codes.DeadlineExceeded), want: controller.ProvisioningInBackground},
		{name: "Unavailable", answer: createFails(codes.Unavailable), want: controller.ProvisioningInBackground},
		{name: "Canceled", answer: createFails(codes.Canceled), want: controller.ProvisioningInBackground},
		{name: "Aborted: operation pending", answer: createFails(codes.Aborted), want: controller.ProvisioningInBackground},
		{name: "Aborted with a selected node", answer: createFails(codes.Aborted), selectedNode: true, want: controller.ProvisioningInBackground},
		{name: "ResourceExhausted with a selected node: reschedule", answer: createFails(codes.ResourceExhausted), selectedNode: true, want: controller.ProvisioningReschedule},
		{name: "ResourceExhausted without a selected node", answer: createFails(codes.ResourceExhausted), want: controller.ProvisioningFinished},
		{name: "InvalidArgument", answer: createFails(codes.InvalidArgument), want: controller.ProvisioningFinished},
		{name: "InvalidArgument with a selected node", answer: createFails(codes.InvalidArgument), selectedNode: true, want: controller.ProvisioningFinished},
		{name: "Internal", answer: createFails(codes.Internal), want: controller.ProvisioningFinished},
		{name: "AlreadyExists: incompatible volume of that name", answer: createFails(codes.AlreadyExists), want: controller.ProvisioningFinished},
		{name: "not a gRPC status: may have reached the driver", answer: createErr(errors.New("connection reset by peer")), want: controller.ProvisioningInBackground},
		{name: "context deadline from the sidecar's own timeout", answer: createErr(fmt.Errorf("rpc: %w", context.DeadlineExceeded)), want: controller.ProvisioningInBackground},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			e.csi.script = []createFunc{tc.answer}
			var node *v1.Node
			if tc.selectedNode {
				node = &v1.Node{}
				node.Name = "node-a"
			}
			pv, state, err := e.provisionOn(newClaim("dev", "data"), newClass(nil), node)
			if state != tc.want {
				t.Errorf("state = %s, want %s", state, tc.want)
			}
			assertErr(t, err, `CreateVolume "pvc-`+string(claimUID)+`"`)
			if isIgnored(err) {
				t.Errorf("error is an IgnoredError; the loop would not report it")
			}
			if pv != nil {
				t.Errorf("got PV %s, want none", pv.Name)
			}
			e.onlyCreate(t)
			if d := e.csi.deletedIDs(); len(d) != 0 {
				t.Errorf("DeleteVolume calls = %v, want none: nothing was created", d)
			}
			e.assertEvents(t)
		})
	}
}

// TestRetryAfterBackground: a claim whose CreateVolume is still running is
// retried with the very same request, and a success then makes the PV.
func TestRetryAfterBackground(t *testing.T) {
	tests := []struct {
		name      string
		first     createFunc
		wantState controller.ProvisioningState
	}{
		{name: "after DeadlineExceeded", first: createFails(codes.DeadlineExceeded), wantState: controller.ProvisioningInBackground},
		{name: "after Unavailable", first: createFails(codes.Unavailable), wantState: controller.ProvisioningInBackground},
		{name: "after a final error", first: createFails(codes.Internal), wantState: controller.ProvisioningFinished},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			e.csi.script = []createFunc{tc.first, createOK()}
			claim, class := newClaim("dev", "data"), newClass(map[string]string{"type": "ssd"})
			if _, state, _ := e.provision(claim, class); state != tc.wantState {
				t.Fatalf("first attempt: state = %s, want %s", state, tc.wantState)
			}
			pv, state, err := e.provision(claim, class)
			assertErr(t, err, "")
			if state != controller.ProvisioningFinished || pv == nil {
				t.Fatalf("second attempt: state %s, PV %v; want Finished with a PV", state, pv)
			}
			if len(e.csi.creates) != 2 || !protoEqual(e.csi.creates[0], e.csi.creates[1]) {
				t.Errorf("retry sent %v, want the first request %v again", e.csi.creates[len(e.csi.creates)-1], e.csi.creates[0])
			}
			// The record ends when the PV exists (pkg/inflight), not before:
			// a crash between here and the PV's creation must not leak.
			if r, ok := e.p.Records.Get(claim.UID); !ok || r.PVName != pvName {
				t.Errorf("after success the call's record is %+v (found %v), want it kept for PV %s", r, ok, pvName)
			}
		})
	}
}

// TestSelectorClaimIsRefused: dynamic provisioning cannot satisfy a label
// selector, and spec.selector cannot change, so such a claim gets one Warning
// Event saying what to do and the loop stops (IgnoredError): no CreateVolume,
// no retries. Upstream refuses every claim whose selector is set, even an
// empty one.
func TestSelectorClaimIsRefused(t *testing.T) {
	tests := []struct {
		name     string
		selector *metav1.LabelSelector
		// late: the claim waits for first consumer and has a selected node
		late bool
	}{
		{name: "matchLabels", selector: &metav1.LabelSelector{MatchLabels: map[string]string{"tier": "gold"}}},
		{name: "matchExpressions", selector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
			{Key: "tier", Operator: metav1.LabelSelectorOpIn, Values: []string{"gold", "silver"}}}}},
		{name: "empty selector", selector: &metav1.LabelSelector{}},
		{name: "with a selected node: not rescheduled", selector: &metav1.LabelSelector{MatchLabels: map[string]string{"tier": "gold"}}, late: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			claim := newClaim("dev", "data", func(c *v1.PersistentVolumeClaim) { c.Spec.Selector = tc.selector })
			var selected *v1.Node
			if tc.late {
				selected = &v1.Node{}
				selected.Name = "node-a"
			}
			pv, state, err := e.provisionOn(claim, newClass(nil), selected)
			if pv != nil || state != controller.ProvisioningFinished || !isIgnored(err) {
				t.Fatalf("got PV %v, state %s, err %v; want no PV, Finished, IgnoredError", pv, state, err)
			}
			e.assertNoCreate(t)
			e.assertEvents(t, claimEvent(v1.EventTypeWarning, events.ProvisioningFailed,
				"spec.selector", "dynamic provisioning cannot satisfy a label selector", "without spec.selector", "PersistentVolume whose labels match"))
		})
	}
}
