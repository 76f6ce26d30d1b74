package provisioner

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	v1 "k8s.io/api/core/v1"
	"k8s.io/klog/v2"
	"sigs.k8s.io/sig-storage-lib-external-provisioner/v10/controller"

	"github.com/crossns/external-provisioner/pkg/datasource"
	"github.com/crossns/external-provisioner/pkg/events"
	"github.com/crossns/external-provisioner/pkg/sharing"
)

// failureKind says what a failed attempt means for its claim. The state the
// provision loop is told follows from it in one place: finish.
type failureKind int

const (
	// transient: a read or write of the API failed, nothing was decided.
	// Retried with backoff; the loop's state of the claim is unchanged.
	transient failureKind = iota
	// invalid: the claim, its class or its source needs a fix from a user,
	// or the driver refused the call for good. Retried with backoff.
	invalid
	// inFlight: the driver may still be working on the call. Retried with
	// the same request (CSI spec, CreateVolume idempotency).
	inFlight
	// reschedule: the selected node cannot get the volume; the scheduler
	// picks again (late binding only).
	reschedule
	// refused: the data source is not allowed, or a share is not (yet)
	// possible. Not retried on a timer: a grant change requeues the claim
	// (pkg/requeue), and a change of a share's source does too (pkg/sharing).
	refused
	// undecided: grants cannot be read, so access is neither allowed nor
	// revoked. Like refused, except that a call in flight stays in flight.
	undecided
	// unsupported: the claim asks for something dynamic provisioning cannot
	// give, in a field that cannot change (spec.selector, a malformed
	// spec.dataSourceRef). Retrying never helps: one Warning Event, and the
	// loop stops (IgnoredError).
	unsupported
)

// failure is an error with its kind.
type failure struct {
	kind failureKind
	err  error
	// reason is the Event reason of refused, undecided and unsupported
	// failures.
	reason string
	// denial is the metrics label of refused and undecided failures.
	denial string
}

func (f *failure) Error() string { return f.err.Error() }
func (f *failure) Unwrap() error { return f.err }

func fail(kind failureKind, err error) error { return &failure{kind: kind, err: err} }

// unsupportedClaim is the failure of a claim that can never be provisioned
// as it is; msg says what to do instead.
func unsupportedClaim(msg string) error {
	return &failure{kind: unsupported, err: errors.New(msg), reason: events.ProvisioningFailed}
}

// kindOf returns the kind of err. Data source errors carry their own kind;
// anything untyped is transient.
func kindOf(err error) *failure {
	var f *failure
	if errors.As(err, &f) {
		return f
	}
	if de, ok := datasource.AsError(err); ok {
		switch {
		case de.Kind == datasource.Denied && de.Undecided:
			return &failure{kind: undecided, err: err, reason: de.Reason, denial: de.DenialReason}
		case de.Kind == datasource.Denied:
			return &failure{kind: refused, err: err, reason: de.Reason, denial: de.DenialReason}
		case de.Kind == datasource.Malformed:
			return &failure{kind: unsupported, err: err, reason: de.Reason}
		default:
			return &failure{kind: invalid, err: err}
		}
	}
	if se, ok := sharing.AsError(err); ok {
		switch {
		case se.Kind == sharing.Unsupported:
			return &failure{kind: unsupported, err: err, reason: se.Reason, denial: se.Denial}
		case se.Undecided:
			return &failure{kind: undecided, err: err, reason: se.Reason, denial: se.Denial}
		default:
			return &failure{kind: refused, err: err, reason: se.Reason, denial: se.Denial}
		}
	}
	return &failure{kind: transient, err: err}
}

// createFailure classifies a failed CreateVolume: may the driver still be
// working on it, should the scheduler pick another node, or is it over.
func createFailure(err error, nodeSelected bool) failureKind {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return inFlight
	}
	st, ok := status.FromError(err)
	if !ok {
		// Not a gRPC status: the call may or may not have reached the
		// driver, so assume it is still in flight.
		return inFlight
	}
	switch st.Code() {
	case codes.DeadlineExceeded, codes.Unavailable, codes.Canceled, codes.Aborted:
		return inFlight
	case codes.ResourceExhausted:
		if nodeSelected {
			return reschedule
		}
	}
	return invalid
}

// finish turns a failed attempt into what the loop is told. An attempt that
// ends the claim's provisioning (anything but transient and inFlight) first
// settles a call recorded earlier that may still be running: the loop forgets
// a claim it is told is finished, and a volume made by that call would then
// belong to nobody.
func (p *Provisioner) finish(ctx context.Context, claim *v1.PersistentVolumeClaim, err error) (controller.ProvisioningState, error) {
	f := kindOf(err)
	_, recorded := p.Records.Get(claim.UID)
	switch {
	case f.kind == inFlight:
		return controller.ProvisioningInBackground, err
	case f.kind == transient:
		return controller.ProvisioningNoChange, err
	case f.kind == undecided && recorded:
		p.Recorder.Event(claim, v1.EventTypeWarning, f.reason, f.err.Error())
		return controller.ProvisioningInBackground, fmt.Errorf("%w; a CreateVolume for this claim may still be running and is finished or cleaned up then", err)
	}
	deleted := ""
	if recorded {
		var serr error
		if deleted, serr = p.settle(ctx, claim.UID); serr != nil {
			if f.kind == refused {
				return controller.ProvisioningInBackground, fmt.Errorf("access was revoked (%w) while a CreateVolume for this claim was in progress; "+
					"waiting for the driver to finish so the volume can be deleted: %v", err, serr)
			}
			return controller.ProvisioningInBackground, fmt.Errorf("%w; a CreateVolume for this claim may still be running and is deleted once the driver answers: %v", err, serr)
		}
	}
	switch f.kind {
	case reschedule:
		return controller.ProvisioningReschedule, err
	case unsupported:
		klog.FromContext(ctx).V(2).Info("Claim cannot be provisioned", "reason", f.reason, "message", f.err.Error())
		p.Recorder.Event(claim, v1.EventTypeWarning, f.reason, f.err.Error())
		return controller.ProvisioningFinished, &controller.IgnoredError{Reason: f.err.Error()}
	case refused, undecided:
		reason, msg, denial := f.reason, f.err.Error(), f.denial
		if deleted != "" {
			reason, denial = events.ReferenceGrantRevoked, "revoked_in_flight"
			msg = fmt.Sprintf("access to the data source was revoked while its volume was being created; the volume %q was deleted and nothing was provisioned. %s", deleted, msg)
		}
		klog.FromContext(ctx).V(2).Info("Data source refused", "reason", reason, "message", msg)
		p.Recorder.Event(claim, v1.EventTypeWarning, reason, msg)
		p.Metrics.ObserveDenial(denial)
		return controller.ProvisioningFinished, &controller.IgnoredError{Reason: msg}
	}
	return controller.ProvisioningFinished, err
}
