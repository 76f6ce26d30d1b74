package provisioner

import (
	"context"
	"errors"
	"testing"

	v1 "k8s.io/api/core/v1"
	"sigs.k8s.io/sig-storage-lib-external-provisioner/v10/controller"

	"github.com/crossns/external-provisioner/pkg/events"
	"github.com/crossns/external-provisioner/pkg/sharing"
)

// fakeSharer answers Share with pv or err and SharedWith with shared.
type fakeSharer struct {
	pv       *v1.PersistentVolume
	err      error
	shared   []string
	sharedEr error
	asked    int
}

func (f *fakeSharer) Requested(c *v1.PersistentVolumeClaim) bool { return sharing.Requested(c) }
func (f *fakeSharer) Share(context.Context, *v1.PersistentVolumeClaim, string) (*v1.PersistentVolume, error) {
	f.asked++
	return f.pv, f.err
}
func (f *fakeSharer) Subordinate(pv *v1.PersistentVolume) bool { return sharing.IsSubordinate(pv) }
func (f *fakeSharer) SharedWith(*v1.PersistentVolume) ([]string, error) {
	return f.shared, f.sharedEr
}

func shareClaim() *v1.PersistentVolumeClaim {
	return newClaim("proj-a", "data", withModes(v1.ReadOnlyMany), withAnnotations(sharing.ShareFromAnnotation, "datasets/ml-data"))
}

// TestProvisionShared: a claim that asks to share never reaches
// CreateVolume; the Sharer's PV is returned as it is, and each refusal kind
// tells the loop what the other refusals of its kind do.
func TestProvisionShared(t *testing.T) {
	subPV := csiVolume(pvName, driverName, "vol-shared")
	tests := []struct {
		name      string
		sharer    *fakeSharer
		claim     *v1.PersistentVolumeClaim
		wantPV    bool
		wantState controller.ProvisioningState
		wantEvent *wantEvent
		ignored   bool
	}{
		{name: "shared", sharer: &fakeSharer{pv: subPV}, claim: shareClaim(), wantPV: true, wantState: controller.ProvisioningFinished},
		{name: "refused: one Event, waits for a change (no timer)", claim: shareClaim(),
			sharer:    &fakeSharer{err: &sharing.Error{Kind: sharing.Refused, Reason: events.SharingNotAllowed, Message: "not shared", Denial: "share_not_allowed"}},
			wantState: controller.ProvisioningFinished, ignored: true, wantEvent: &wantEvent{"PersistentVolumeClaim", "Warning", events.SharingNotAllowed, []string{"not shared"}}},
		{name: "undecided: same, nothing was in flight", claim: shareClaim(),
			sharer:    &fakeSharer{err: &sharing.Error{Kind: sharing.Refused, Undecided: true, Reason: events.ReferenceGrantsUnavailable, Message: "cannot decide"}},
			wantState: controller.ProvisioningFinished, ignored: true, wantEvent: &wantEvent{"PersistentVolumeClaim", "Warning", events.ReferenceGrantsUnavailable, nil}},
		{name: "unsupported: one Event", claim: shareClaim(),
			sharer:    &fakeSharer{err: &sharing.Error{Kind: sharing.Unsupported, Reason: events.ShareInvalid, Message: "ReadWriteOnce"}},
			wantState: controller.ProvisioningFinished, ignored: true, wantEvent: &wantEvent{"PersistentVolumeClaim", "Warning", events.ShareInvalid, nil}},
		{name: "transient: retried, nothing changed", claim: shareClaim(), sharer: &fakeSharer{err: errors.New("conflict")},
			wantState: controller.ProvisioningNoChange},
		{name: "a claim without the annotation is not the Sharer's", claim: newClaim("dev", "data"), sharer: &fakeSharer{},
			wantPV: true, wantState: controller.ProvisioningFinished},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			e.p.Sharer = tc.sharer
			pv, state, err := e.provision(tc.claim, newClass(nil))
			if state != tc.wantState || (pv != nil) != tc.wantPV || isIgnored(err) != tc.ignored {
				t.Fatalf("Provision() = %v, %v, %v; want PV %v, state %v, ignored %v", pv, state, err, tc.wantPV, tc.wantState, tc.ignored)
			}
			if sharing.Requested(tc.claim) {
				e.assertNoCreate(t)
				if tc.sharer.asked != 1 {
					t.Errorf("Sharer asked %d times, want 1", tc.sharer.asked)
				}
				if tc.wantPV && pv != subPV {
					t.Errorf("Provision returned %v, not the Sharer's PV", pv)
				}
			} else if tc.sharer.asked != 0 {
				t.Errorf("Sharer asked about a claim that does not share")
			}
			if tc.wantEvent != nil {
				e.assertEvents(t, *tc.wantEvent)
			}
		})
	}
}

// TestDeleteShared: a subordinate PV is deleted without DeleteVolume; a
// volume other PVs still use is not deleted (retried by the loop).
func TestDeleteShared(t *testing.T) {
	subordinate := func(pv *v1.PersistentVolume) {
		pv.Annotations = map[string]string{sharing.SharedFromAnnotation: "datasets/ml-data", sharing.SharedVolumeAnnotation: "pv-ml-data"}
	}
	tests := []struct {
		name       string
		pv         *v1.PersistentVolume
		sharer     *fakeSharer
		wantDelete bool
		wantErr    string
	}{
		{name: "subordinate: the volume stays", pv: ownVolume(subordinate), sharer: &fakeSharer{shared: []string{"pv-ml-data"}}},
		{name: "subordinate whose source is gone: the volume still stays", pv: ownVolume(subordinate), sharer: &fakeSharer{}},
		{name: "source with live subordinates: refused, retried", pv: ownVolume(), sharer: &fakeSharer{shared: []string{"pvc-a", "pvc-b"}},
			wantErr: "PersistentVolumes [pvc-a pvc-b] still use it"},
		{name: "cannot tell: refused", pv: ownVolume(), sharer: &fakeSharer{sharedEr: errors.New("no index")}, wantErr: "cannot tell"},
		{name: "last user: deleted", pv: ownVolume(), sharer: &fakeSharer{}, wantDelete: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			e.p.Sharer = tc.sharer
			err := e.p.Delete(context.Background(), tc.pv)
			assertErr(t, err, tc.wantErr)
			if isIgnored(err) {
				t.Errorf("Delete() = IgnoredError: the loop would leave the PV Released for ever")
			}
			if got := len(e.csi.deletes) > 0; got != tc.wantDelete {
				t.Errorf("DeleteVolume called = %v, want %v", got, tc.wantDelete)
			}
		})
	}
}
