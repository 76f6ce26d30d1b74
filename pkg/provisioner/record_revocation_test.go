package provisioner

import (
	"context"
	"testing"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	k8stesting "k8s.io/client-go/testing"
	"sigs.k8s.io/sig-storage-lib-external-provisioner/v10/controller"

	"github.com/crossns/external-provisioner/pkg/events"
	"github.com/crossns/external-provisioner/pkg/inflight"
)

// TestGrantRevokedWhileTheCallIsRecorded: writing the in-flight record can
// take seconds (client-side rate limit, batching), and the grant may be
// revoked meanwhile. The call must not be made then: the grant is decided
// once more after the record is written. Found by the soak harness
// (test/soak, no-unauthorized-copy): a new leader's record write waited 1.4 s
// for the client's rate limit, and CreateVolume started 2.6 s after the
// grant was revoked; the claim was bound.
func TestGrantRevokedWhileTheCallIsRecorded(t *testing.T) {
	for _, tc := range []struct {
		name string
		// revoke during the record write
		revoke     bool
		wantState  controller.ProvisioningState
		wantErr    string
		wantCreate bool
		wantEvents []wantEvent
	}{
		{
			name: "revoked during the write: no call, no record, refused", revoke: true,
			wantState: controller.ProvisioningFinished, wantErr: "no ReferenceGrant",
			wantEvents: []wantEvent{claimEvent(v1.EventTypeWarning, events.ReferenceGrantMissing, `no ReferenceGrant in namespace "prod"`)},
		},
		{
			name: "still granted after the write: provisioned", wantState: controller.ProvisioningFinished, wantCreate: true,
			wantEvents: []wantEvent{
				claimEvent(v1.EventTypeNormal, events.ProvisionedFromSource, "under ReferenceGrant prod/allow-dev"),
				sourceEvent("VolumeSnapshot", "Used as the source of dev/copy"),
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, prodSnapshot()...)
			e.grants.Allow(nightlyRef, "allow-dev")
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			records := inflight.NewStore(e.client, "default", "records")
			if err := records.Load(ctx); err != nil {
				t.Fatal(err)
			}
			go records.Run(ctx)
			e.p.Records = records
			writes := 0
			e.client.PrependReactor("update", "configmaps", func(k8stesting.Action) (bool, runtime.Object, error) {
				writes++
				if tc.revoke {
					revoke(e)
				}
				return false, nil, nil
			})

			claim, class := newClaim("dev", "copy", fromSnapshot("prod", "nightly")), newClass(nil)
			pv, state, err := e.provision(claim, class)
			if state != tc.wantState {
				t.Errorf("state %s, want %s (err %v)", state, tc.wantState, err)
			}
			assertErr(t, err, tc.wantErr)
			if writes == 0 {
				t.Fatal("the call was not recorded in the ConfigMap")
			}
			if tc.wantCreate {
				e.onlyCreate(t)
				if pv == nil {
					t.Error("no PV")
				}
			} else {
				e.assertNoCreate(t)
				if _, ok := e.p.Records.Get(claim.UID); ok {
					t.Error("the record of a call never made is kept: it would be settled by making the call")
				}
			}
			e.assertEvents(t, tc.wantEvents...)
		})
	}
}
