package provisioner

import (
	"context"
	"errors"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	v1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	corelisters "k8s.io/client-go/listers/core/v1"
	"sigs.k8s.io/sig-storage-lib-external-provisioner/v10/controller"

	"github.com/crossns/external-provisioner/pkg/inflight"
)

// TestNeverFinishedWhileACallMayRun: after a CreateVolume timed out, a later
// attempt that fails before the call (the source went away, topology) must
// not tell the loop "finished" while the first call may still be running:
// the loop would forget the claim and a volume would belong to nobody. The
// recorded call is settled first (repeated without its source, its volume
// deleted); while the
// driver is still busy the claim stays in flight.
func TestNeverFinishedWhileACallMayRun(t *testing.T) {
	volID := "vol-" + pvName
	tests := []struct {
		name string
		// breakIt happens between the timed-out attempt and the next one.
		breakIt func(e *env)
		// repeat is the driver's answer to the repeated call.
		repeat      createFunc
		wantState   controller.ProvisioningState
		wantErr     string
		wantDeletes []string
		wantRecord  bool
	}{
		{
			name:      "source snapshot gone: the call is repeated, its volume deleted, then finished",
			breakIt:   func(e *env) { _ = e.snapshots.Delete(prodSnapshot()[0]) },
			repeat:    createOK(),
			wantState: controller.ProvisioningFinished, wantErr: "not found", wantDeletes: []string{volID},
		},
		{
			name:      "source snapshot gone, driver still busy: stays in flight",
			breakIt:   func(e *env) { _ = e.snapshots.Delete(prodSnapshot()[0]) },
			repeat:    createFails(codes.DeadlineExceeded),
			wantState: controller.ProvisioningInBackground, wantErr: "may still be running", wantRecord: true,
		},
		{
			name:      "the repeated call is refused: nothing was made, finished",
			breakIt:   func(e *env) { _ = e.snapshots.Delete(prodSnapshot()[0]) },
			repeat:    createFails(codes.NotFound),
			wantState: controller.ProvisioningFinished, wantErr: "not found",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, prodSnapshot()...)
			e.grants.Allow(nightlyRef, "allow-dev")
			e.csi.script = []createFunc{createFails(codes.DeadlineExceeded), tc.repeat}
			claim, class := newClaim("dev", "copy", fromSnapshot("prod", "nightly")), newClass(nil)
			if _, state, _ := e.provision(claim, class); state != controller.ProvisioningInBackground {
				t.Fatalf("first attempt: state %s, want InBackground", state)
			}
			if _, ok := e.p.Records.Get(claim.UID); !ok {
				t.Fatalf("the timed-out call is not recorded")
			}
			tc.breakIt(e)
			_, state, err := e.provision(claim, class)
			if state != tc.wantState {
				t.Errorf("state %s, want %s (err %v)", state, tc.wantState, err)
			}
			assertErr(t, err, tc.wantErr)
			if got := e.csi.deletedIDs(); !equalStrings(got, tc.wantDeletes) {
				t.Errorf("deleted %v, want %v", got, tc.wantDeletes)
			}
			if _, ok := e.p.Records.Get(claim.UID); ok != tc.wantRecord {
				t.Errorf("record kept = %v, want %v", ok, tc.wantRecord)
			}
			// Settled: the recorded request without its source (nothing is
			// provisioned from it).
			want := proto.Clone(e.csi.creates[0]).(*csi.CreateVolumeRequest)
			want.VolumeContentSource = nil
			if len(e.csi.creates) != 2 || !protoEqual(want, e.csi.creates[1]) {
				t.Errorf("want the recorded request repeated once without its source, got %v", e.csi.creates)
			}
		})
	}
}

// TestTopologyFailureAfterTimeoutRepeatsTheCall: a call in flight is not
// ended by topology that cannot be computed any more (node label removed,
// node or CSINode deleted): the retry repeats the recorded call, whose volume
// may exist already, and the claim gets it.
func TestTopologyFailureAfterTimeoutRepeatsTheCall(t *testing.T) {
	e := newEnv(t)
	e.csi.script = []createFunc{createFails(codes.DeadlineExceeded), createOK()}
	e.p.PluginCaps = map[csi.PluginCapability_Service_Type]bool{csi.PluginCapability_Service_VOLUME_ACCESSIBILITY_CONSTRAINTS: true}
	e.p.Topology = &scriptedTopology{script: []topoAnswer{{req: zoneRequirement("a")}}}
	claim, class := newClaim("dev", "data"), newClass(nil)
	if _, state, _ := e.provision(claim, class); state != controller.ProvisioningInBackground {
		t.Fatalf("first attempt: state %s, want InBackground", state)
	}
	e.p.Topology = failingTopology{}
	pv, state, err := e.provision(claim, class)
	if pv == nil || state != controller.ProvisioningFinished || err != nil {
		t.Fatalf("got PV %v, state %s, err %v; want the PV of the recorded call", pv, state, err)
	}
	if len(e.csi.creates) != 2 || !protoEqual(e.csi.creates[0], e.csi.creates[1]) {
		t.Errorf("want the recorded request repeated once, got %v", e.csi.creates)
	}
	if got := e.csi.deletedIDs(); len(got) != 0 {
		t.Errorf("deleted %v, want nothing", got)
	}
}

type failingTopology struct{}

func (failingTopology) Requirements(*storagev1.StorageClass, *v1.Node, string) (*csi.TopologyRequirement, error) {
	return nil, errors.New(`node "node-a" has no topology label`)
}

// TestDeletedClaimHandedBackIsSettled: the loop keeps claims whose call was in
// flight and calls Provision again after they are deleted; no PV is made and
// the volume is deleted.
func TestDeletedClaimHandedBackIsSettled(t *testing.T) {
	e := newEnv(t)
	e.csi.script = []createFunc{createFails(codes.DeadlineExceeded), createOK()}
	claim, class := newClaim("dev", "data"), newClass(nil)
	if _, state, _ := e.provision(claim, class); state != controller.ProvisioningInBackground {
		t.Fatalf("first attempt: state %s, want InBackground", state)
	}
	e.p.Claims = corelisters.NewPersistentVolumeClaimLister(e.claims) // the claim is not in it: deleted
	pv, state, err := e.provision(claim, class)
	if pv != nil || state != controller.ProvisioningFinished || !isIgnored(err) {
		t.Fatalf("got PV %v, state %s, err %v; want no PV, Finished, IgnoredError", pv, state, err)
	}
	if got := e.csi.deletedIDs(); !equalStrings(got, []string{"vol-" + pvName}) {
		t.Errorf("deleted %v, want the volume of the timed-out call", got)
	}
	if _, ok := e.p.Records.Get(claim.UID); ok {
		t.Errorf("record kept after the volume was deleted")
	}
}

// TestSettleFromRecordAfterRestart: a record read at start (no claim) is
// settled with the request as recorded, secrets read again.
func TestSettleFromRecordAfterRestart(t *testing.T) {
	e := newEnv(t, &v1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "kube-system", Name: "prov"}, Data: map[string][]byte{"k": []byte("v")}})
	req := &csi.CreateVolumeRequest{Name: "pvc-x", CapacityRange: &csi.CapacityRange{RequiredBytes: 1}}
	ref := &v1.SecretReference{Namespace: "kube-system", Name: "prov"}
	if err := e.p.Records.Add(context.Background(), inflight.Record{ClaimUID: "x", Namespace: "dev", Claim: "gone", PVName: "pvc-x", SecretRef: ref, Request: req}); err != nil {
		t.Fatal(err)
	}
	if err := e.p.Settle(context.Background(), mustGet(t, e.p.Records, "x")); err != nil {
		t.Fatal(err)
	}
	if len(e.csi.creates) != 1 || e.csi.creates[0].Secrets["k"] != "v" || e.csi.creates[0].Name != "pvc-x" {
		t.Errorf("repeated call %v, want the recorded request with the secret read again", e.csi.creates)
	}
	if got := e.csi.deletedIDs(); !equalStrings(got, []string{"vol-pvc-x"}) {
		t.Errorf("deleted %v", got)
	}
	if e.p.claimLocks.Len() != 0 {
		t.Errorf("%d claim locks left after settling", e.p.claimLocks.Len())
	}
}

func mustGet(t *testing.T, s *inflight.Store, uid string) inflight.Record {
	t.Helper()
	r, ok := s.Get(types.UID(uid))
	if !ok {
		t.Fatalf("no record %s", uid)
	}
	return r
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestSettleRepeatsWithoutSource: a call with a data source is settled by
// asking the driver without the source, so a call that never reached the
// driver (the sidecar stopped after the record; found by the soak) makes an
// empty volume, never a copy for a claim that may not have the data. A
// driver that matches sources on a repeat answers AlreadyExists: the volume
// exists, and the exact repeat returns it.
func TestSettleRepeatsWithoutSource(t *testing.T) {
	recorded := &csi.CreateVolumeRequest{Name: "pvc-x", CapacityRange: &csi.CapacityRange{RequiredBytes: 1},
		VolumeContentSource: &csi.VolumeContentSource{Type: &csi.VolumeContentSource_Snapshot{
			Snapshot: &csi.VolumeContentSource_SnapshotSource{SnapshotId: "snap-prod"}}}}
	sourceless := proto.Clone(recorded).(*csi.CreateVolumeRequest)
	sourceless.VolumeContentSource = nil
	tests := []struct {
		name        string
		answers     []createFunc
		wantCreates []*csi.CreateVolumeRequest
		wantDeletes []string
		wantErr     string
		wantRecord  bool
	}{
		{name: "made or not, the volume of that name is returned and deleted",
			answers: []createFunc{createOK()}, wantCreates: []*csi.CreateVolumeRequest{sourceless}, wantDeletes: []string{"vol-pvc-x"}},
		{name: "the driver matches sources: the exact repeat returns the volume the call made",
			answers:     []createFunc{createFails(codes.AlreadyExists), createOK()},
			wantCreates: []*csi.CreateVolumeRequest{sourceless, recorded}, wantDeletes: []string{"vol-pvc-x"}},
		{name: "AlreadyExists to the exact request too: not ours, the record stays",
			answers:     []createFunc{createFails(codes.AlreadyExists), createFails(codes.AlreadyExists)},
			wantCreates: []*csi.CreateVolumeRequest{sourceless, recorded}, wantErr: "delete the volume by hand", wantRecord: true},
		{name: "the recorded call is still running: the record stays",
			answers: []createFunc{createFails(codes.Aborted)}, wantCreates: []*csi.CreateVolumeRequest{sourceless},
			wantErr: "still running", wantRecord: true},
		{name: "refused: nothing made under that name",
			answers: []createFunc{createFails(codes.InvalidArgument)}, wantCreates: []*csi.CreateVolumeRequest{sourceless}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			if err := e.p.Records.Add(context.Background(), inflight.Record{ClaimUID: "x", Namespace: "dev", Claim: "gone", PVName: "pvc-x", Request: recorded}); err != nil {
				t.Fatal(err)
			}
			e.csi.script = tc.answers
			err := e.p.Settle(context.Background(), mustGet(t, e.p.Records, "x"))
			assertErr(t, err, tc.wantErr)
			if len(e.csi.creates) != len(tc.wantCreates) {
				t.Fatalf("CreateVolume calls %v, want %v", e.csi.creates, tc.wantCreates)
			}
			for i, want := range tc.wantCreates {
				if !protoEqual(e.csi.creates[i], want) {
					t.Errorf("CreateVolume #%d %v, want %v", i, e.csi.creates[i], want)
				}
			}
			if got := e.csi.deletedIDs(); !equalStrings(got, tc.wantDeletes) {
				t.Errorf("deleted %v, want %v", got, tc.wantDeletes)
			}
			if _, ok := e.p.Records.Get("x"); ok != tc.wantRecord {
				t.Errorf("record kept = %v, want %v", ok, tc.wantRecord)
			}
		})
	}
}
