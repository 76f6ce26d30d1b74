package provisioner

import (
	"errors"
	"fmt"
	"reflect"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	v1 "k8s.io/api/core/v1"
	"sigs.k8s.io/sig-storage-lib-external-provisioner/v10/controller"

	"github.com/crossns/external-provisioner/pkg/events"
	"github.com/crossns/external-provisioner/pkg/referencegrant"
)

// revocationStep is one more Provision of dev/copy after its first
// CreateVolume (under grant prod/allow-dev) timed out.
type revocationStep struct {
	// change happens before the attempt: revoke or restore the grant, ...
	change func(e *env)
	// answer is the driver's answer to the CreateVolume of this attempt;
	// deleteErr its answer to DeleteVolume.
	answer    createFunc
	deleteErr error

	// noCreate: the driver is not asked to create in this attempt (else once)
	noCreate bool

	wantState   controller.ProvisioningState
	wantIgnored bool
	wantErr     string
	wantPV      bool
	// wantDeletes are the volume IDs deleted in this attempt
	wantDeletes []string
	wantEvents  []wantEvent
}

func revoke(e *env)  { e.grants.Revoke(nightlyRef) }
func restore(e *env) { e.grants.Allow(nightlyRef, "allow-dev") }

// TestGrantRevokedWhileCreateVolumeInFlight follows the design in create.go:
// a CreateVolume that may still be running when its grant is revoked is
// repeated (same request without the source, so the driver answers with what
// it made and copies nothing) and the volume it made is deleted; nothing is
// provisioned.
func TestGrantRevokedWhileCreateVolumeInFlight(t *testing.T) {
	volID := "vol-" + pvName
	revoked := claimEvent(v1.EventTypeWarning, events.ReferenceGrantRevoked,
		"revoked while its volume was being created", `the volume "`+volID+`" was deleted`, `no ReferenceGrant in namespace "prod"`)
	missing := claimEvent(v1.EventTypeWarning, events.ReferenceGrantMissing, `no ReferenceGrant in namespace "prod"`, `from "dev"`)
	provisioned := []wantEvent{
		claimEvent(v1.EventTypeNormal, events.ProvisionedFromSource, "under ReferenceGrant prod/allow-dev"),
		sourceEvent("VolumeSnapshot", "Used as the source of dev/copy"),
	}
	tests := []struct {
		name  string
		steps []revocationStep
	}{
		{
			name: "the driver made the volume: it is deleted",
			steps: []revocationStep{
				{change: revoke, answer: createOK(), wantState: controller.ProvisioningFinished, wantIgnored: true,
					wantErr: "was deleted and nothing was provisioned", wantDeletes: []string{volID}, wantEvents: []wantEvent{revoked}},
				// Nothing in flight any more: a later attempt is a plain denial.
				{answer: createOK(), noCreate: true, wantState: controller.ProvisioningFinished, wantIgnored: true, wantErr: "no ReferenceGrant",
					wantEvents: []wantEvent{missing}},
				// A new grant provisions the claim afresh.
				{change: restore, answer: createOK(), wantState: controller.ProvisioningFinished, wantPV: true, wantEvents: provisioned},
			},
		},
		{
			name: "the repeated call fails finally: the driver made nothing, plain denial",
			steps: []revocationStep{
				{change: revoke, answer: createFails(codes.InvalidArgument), wantState: controller.ProvisioningFinished, wantIgnored: true,
					wantErr: "no ReferenceGrant", wantEvents: []wantEvent{missing}},
				// The driver is not asked again.
				{answer: createOK(), noCreate: true, wantState: controller.ProvisioningFinished, wantIgnored: true,
					wantErr: "no ReferenceGrant", wantEvents: []wantEvent{missing}},
			},
		},
		{
			name: "the driver is still working: wait for it, then delete",
			steps: []revocationStep{
				{change: revoke, answer: createFails(codes.DeadlineExceeded), wantState: controller.ProvisioningInBackground,
					wantErr: "access was revoked"},
				{answer: createFails(codes.Unavailable), wantState: controller.ProvisioningInBackground, wantErr: "waiting for the driver to finish"},
				{answer: createOK(), wantState: controller.ProvisioningFinished, wantIgnored: true,
					wantErr: "nothing was provisioned", wantDeletes: []string{volID}, wantEvents: []wantEvent{revoked}},
			},
		},
		{
			name: "the repeated call answers without a volume: nothing to delete, plain denial",
			steps: []revocationStep{
				{change: revoke, answer: func(*csi.CreateVolumeRequest) (*csi.CreateVolumeResponse, error) {
					return &csi.CreateVolumeResponse{}, nil
				}, wantState: controller.ProvisioningFinished, wantIgnored: true, wantErr: "no ReferenceGrant", wantEvents: []wantEvent{missing}},
				{answer: createOK(), noCreate: true, wantState: controller.ProvisioningFinished, wantIgnored: true,
					wantErr: "no ReferenceGrant", wantEvents: []wantEvent{missing}},
			},
		},
		{
			name: "DeleteVolume fails: retried until the volume is gone",
			steps: []revocationStep{
				{change: revoke, answer: createOK(), deleteErr: status.Error(codes.Internal, "backend busy"),
					wantState: controller.ProvisioningInBackground, wantErr: `deleting volume "` + volID + `" that no PV will own`,
					wantDeletes: []string{volID}},
				{answer: createOK(), wantState: controller.ProvisioningFinished, wantIgnored: true,
					wantErr: "nothing was provisioned", wantDeletes: []string{volID}, wantEvents: []wantEvent{revoked}},
			},
		},
		{
			name: "the grant stays: the same request completes",
			steps: []revocationStep{
				{answer: createOK(), wantState: controller.ProvisioningFinished, wantPV: true, wantEvents: provisioned},
			},
		},
		{
			name: "grants become unreadable: undecided, the call stays in flight until they can be read",
			steps: []revocationStep{
				{change: func(e *env) { e.grants.SetError(fmt.Errorf("forbidden: %w", referencegrant.ErrUnavailable)) },
					noCreate: true, wantState: controller.ProvisioningInBackground, wantErr: "cannot decide",
					wantEvents: []wantEvent{claimEvent(v1.EventTypeWarning, events.ReferenceGrantsUnavailable, "cannot decide")}},
				// Readable again and the grant is still there: the same request completes.
				{change: func(e *env) { e.grants.SetError(nil) },
					answer: createOK(), wantState: controller.ProvisioningFinished, wantPV: true, wantEvents: provisioned},
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, prodSnapshot()...)
			restore(e)
			claim := newClaim("dev", "copy", fromSnapshot("prod", "nightly"))
			class := newClass(map[string]string{"type": "ssd"})

			// The first CreateVolume times out under the grant.
			e.csi.script = []createFunc{createFails(codes.DeadlineExceeded)}
			pv, state, err := e.provision(claim, class)
			if state != controller.ProvisioningInBackground || pv != nil || err == nil || isIgnored(err) {
				t.Fatalf("first attempt: PV %v, state %s, err %v; want InBackground with a reported error", pv, state, err)
			}
			first := e.onlyCreate(t)
			e.assertEvents(t)

			for i, s := range tc.steps {
				if s.change != nil {
					s.change(e)
				}
				creates, deletes := len(e.csi.creates), len(e.csi.deletes)
				e.csi.script = []createFunc{s.answer}
				e.csi.deleteErrs = []error{s.deleteErr}

				pv, state, err := e.provision(claim, class)

				if state != s.wantState {
					t.Errorf("step %d: state = %s, want %s", i, state, s.wantState)
				}
				assertErr(t, err, s.wantErr)
				if isIgnored(err) != s.wantIgnored {
					t.Errorf("step %d: IgnoredError = %v, want %v (err %v)", i, isIgnored(err), s.wantIgnored, err)
				}
				if (pv != nil) != s.wantPV {
					t.Errorf("step %d: PV %v, want one: %v", i, pv, s.wantPV)
				}
				wantCreates := 1
				if s.noCreate {
					wantCreates = 0
				}
				if n := len(e.csi.creates) - creates; n != wantCreates {
					t.Errorf("step %d: %d CreateVolume calls, want %d", i, n, wantCreates)
				}
				// Whenever the driver is asked again, it is asked the very same
				// thing — without the data source when the call is settled
				// (nothing is provisioned): the claim may not have the data.
				want := first
				if !s.wantPV {
					want = proto.Clone(first).(*csi.CreateVolumeRequest)
					want.VolumeContentSource = nil
				}
				for _, req := range e.csi.creates[creates:] {
					if !protoEqual(req, want) {
						t.Errorf("step %d: CreateVolume %v, want %v", i, req, want)
					}
				}
				if got := e.csi.deletedIDs()[deletes:]; !reflect.DeepEqual(got, s.wantDeletes) && len(got)+len(s.wantDeletes) > 0 {
					t.Errorf("step %d: DeleteVolume %v, want %v", i, got, s.wantDeletes)
				}
				e.assertEvents(t, s.wantEvents...)
			}
		})
	}
}

// flipChecker allows what its Fake allows on the first Check, and revokes
// it right after (or, with then, makes later checks fail): the grant changes
// between Resolve and the last check before CreateVolume.
type flipChecker struct {
	*referencegrant.Fake
	then error
	n    int
}

func (c *flipChecker) Check(ref referencegrant.Reference) (referencegrant.Decision, error) {
	d, err := c.Fake.Check(ref)
	if c.n++; c.n == 1 {
		if c.then != nil {
			c.Fake.SetError(c.then)
		} else {
			c.Fake.Revoke(ref)
		}
	}
	return d, err
}

// TestGrantRevokedBeforeCreateVolume: a grant that goes away after the source
// was resolved still stops the claim before the driver is asked.
func TestGrantRevokedBeforeCreateVolume(t *testing.T) {
	tests := []struct {
		name        string
		setup       func(e *env)
		wantState   controller.ProvisioningState
		wantIgnored bool
		wantErr     string
		wantEvents  []wantEvent
		// wantChecks: Resolve, before the source is protected, after it
		wantChecks int
	}{
		{
			name:       "revoked between Resolve and the check before protection",
			wantChecks: 2,
			setup:      func(e *env) { e.resolver.Grants = &flipChecker{Fake: e.grants} },
			wantState:  controller.ProvisioningFinished, wantIgnored: true, wantErr: "no ReferenceGrant",
			wantEvents: []wantEvent{claimEvent(v1.EventTypeWarning, events.ReferenceGrantMissing,
				`no ReferenceGrant in namespace "prod"`, `VolumeSnapshot "nightly"`)},
		},
		{
			name:       "revoked while the source was being protected",
			wantChecks: 3,
			setup:      func(e *env) { e.protector.hook = func() { revoke(e) } },
			wantState:  controller.ProvisioningFinished, wantIgnored: true, wantErr: "no ReferenceGrant",
			wantEvents: []wantEvent{claimEvent(v1.EventTypeWarning, events.ReferenceGrantMissing, `no ReferenceGrant in namespace "prod"`)},
		},
		{
			name:       "grants became unreadable while the source was being protected",
			wantChecks: 3,
			setup: func(e *env) {
				e.protector.hook = func() { e.grants.SetError(fmt.Errorf("CRD deleted: %w", referencegrant.ErrUnavailable)) }
			},
			wantState: controller.ProvisioningFinished, wantIgnored: true, wantErr: "cannot decide",
			wantEvents: []wantEvent{claimEvent(v1.EventTypeWarning, events.ReferenceGrantsUnavailable, "CRD deleted")},
		},
		{
			name:       "the check before protection fails transiently: retried, no Event",
			wantChecks: 2,
			setup:      func(e *env) { e.resolver.Grants = &flipChecker{Fake: e.grants, then: errors.New("index corrupt")} },
			wantState:  controller.ProvisioningNoChange, wantErr: "checking ReferenceGrants for VolumeSnapshot prod/nightly: index corrupt",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, prodSnapshot()...)
			restore(e)
			tc.setup(e)
			pv, state, err := e.provision(newClaim("dev", "copy", fromSnapshot("prod", "nightly")), newClass(nil))
			if pv != nil || state != tc.wantState {
				t.Errorf("PV %v, state %s; want no PV, %s", pv, state, tc.wantState)
			}
			assertErr(t, err, tc.wantErr)
			if isIgnored(err) != tc.wantIgnored {
				t.Errorf("IgnoredError = %v, want %v (err %v)", isIgnored(err), tc.wantIgnored, err)
			}
			e.assertNoCreate(t)
			if n := len(e.grants.Checked()); n != tc.wantChecks {
				t.Errorf("grants consulted %d times, want %d", n, tc.wantChecks)
			}
			e.assertEvents(t, tc.wantEvents...)
		})
	}
}
