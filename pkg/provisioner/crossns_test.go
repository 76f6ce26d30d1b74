package provisioner

import (
	"errors"
	"fmt"
	"reflect"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	snapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	"google.golang.org/protobuf/proto"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/sig-storage-lib-external-provisioner/v10/controller"

	"github.com/crossns/external-provisioner/pkg/datasource"
	"github.com/crossns/external-provisioner/pkg/events"
	"github.com/crossns/external-provisioner/pkg/referencegrant"
)

// The cross-namespace stories: claim dev/copy restores VolumeSnapshot
// prod/nightly or clones PersistentVolumeClaim prod/db.
var (
	nightlyRef = grantRef("dev", datasource.SnapshotGroup, datasource.SnapshotKind, "prod", "nightly")
	dbRef      = grantRef("dev", "", datasource.ClaimKind, "prod", "db")
)

func prodSnapshot() []runtime.Object {
	return objs(readySnapshot("prod", "nightly", "content-nightly", "1Gi"), boundContent("content-nightly", "prod", "nightly", "snap-nightly"))
}

func prodClaim() []runtime.Object {
	db := boundClaim("prod", "db", "pv-db", "1Gi")
	return objs(db, volumeOf(db, driverName, "vol-db"))
}

func sourceEvent(kind string, words ...string) wantEvent {
	return wantEvent{kind: kind, eventType: v1.EventTypeNormal, reason: events.UsedAsDataSource, words: words}
}

func TestCrossNamespaceDataSource(t *testing.T) {
	// A denial names the ReferenceGrant that would allow the claim.
	missingWords := []string{`no ReferenceGrant in namespace "prod"`, `from "dev"`, `VolumeSnapshot "nightly"`,
		`with from {group: "", kind: PersistentVolumeClaim, namespace: "dev"}`,
		`to {group: "snapshot.storage.k8s.io", kind: VolumeSnapshot, name: "nightly"}`}
	tests := []struct {
		name    string
		objects []runtime.Object
		claim   func(*v1.PersistentVolumeClaim)
		// setup turns the gate off, allows references or breaks the grant API
		setup func(e *env)

		wantState   controller.ProvisioningState
		wantIgnored bool
		wantErr     string
		// wantContent is what CreateVolume gets; nil means no CreateVolume
		wantContent *csi.VolumeContentSource
		wantEvents  []wantEvent
		// wantAnn are the PV's annotations on success
		wantAnn map[string]string
		// wantChecks is how often the grants were consulted: a provisioned
		// claim 4 times (resolve, before and after protection, after the
		// call was recorded)
		wantChecks int
	}{
		{
			name: "gate off", objects: prodSnapshot(), claim: fromSnapshot("prod", "nightly"),
			setup:     func(e *env) { e.resolver.CrossNamespace, e.resolver.Grants = false, nil },
			wantState: controller.ProvisioningFinished, wantIgnored: true, wantErr: "CrossNamespaceVolumeDataSource=true",
			wantEvents: []wantEvent{claimEvent(v1.EventTypeWarning, events.CrossNamespaceGateDisabled,
				"VolumeSnapshot prod/nightly in another namespace", "--feature-gates=CrossNamespaceVolumeDataSource=true")},
		},
		{
			name: "gate off, even with a grant", objects: prodSnapshot(), claim: fromSnapshot("prod", "nightly"),
			setup: func(e *env) {
				e.grants.Allow(nightlyRef, "allow-dev")
				e.resolver.CrossNamespace = false
			},
			wantState: controller.ProvisioningFinished, wantIgnored: true, wantErr: "CrossNamespaceVolumeDataSource",
			wantEvents: []wantEvent{claimEvent(v1.EventTypeWarning, events.CrossNamespaceGateDisabled, "VolumeSnapshot prod/nightly")},
		},
		{
			name: "no grant", objects: prodSnapshot(), claim: fromSnapshot("prod", "nightly"),
			wantState: controller.ProvisioningFinished, wantIgnored: true, wantErr: "no ReferenceGrant",
			wantEvents: []wantEvent{claimEvent(v1.EventTypeWarning, events.ReferenceGrantMissing, missingWords...)},
			wantChecks: 1,
		},
		{
			name: "no grant: the claim learns nothing of what exists in prod", claim: fromSnapshot("prod", "nightly"),
			wantState: controller.ProvisioningFinished, wantIgnored: true, wantErr: "no ReferenceGrant",
			wantEvents: []wantEvent{claimEvent(v1.EventTypeWarning, events.ReferenceGrantMissing, missingWords...)},
			wantChecks: 1,
		},
		{
			name: "grant for another snapshot", objects: prodSnapshot(), claim: fromSnapshot("prod", "nightly"),
			setup: func(e *env) {
				e.grants.Allow(grantRef("dev", datasource.SnapshotGroup, datasource.SnapshotKind, "prod", "weekly"), "allow-weekly")
			},
			wantState: controller.ProvisioningFinished, wantIgnored: true, wantErr: "no ReferenceGrant",
			wantEvents: []wantEvent{claimEvent(v1.EventTypeWarning, events.ReferenceGrantMissing, missingWords...)},
			wantChecks: 1,
		},
		{
			name: "grant for claims of another namespace", objects: prodSnapshot(), claim: fromSnapshot("prod", "nightly"),
			setup: func(e *env) {
				e.grants.Allow(grantRef("test", datasource.SnapshotGroup, datasource.SnapshotKind, "prod", "nightly"), "allow-test")
			},
			wantState: controller.ProvisioningFinished, wantIgnored: true, wantErr: "no ReferenceGrant",
			wantEvents: []wantEvent{claimEvent(v1.EventTypeWarning, events.ReferenceGrantMissing, missingWords...)},
			wantChecks: 1,
		},
		{
			name: "no grant for a clone", objects: prodClaim(), claim: fromClaim("prod", "db"),
			wantState: controller.ProvisioningFinished, wantIgnored: true, wantErr: "no ReferenceGrant",
			wantEvents: []wantEvent{claimEvent(v1.EventTypeWarning, events.ReferenceGrantMissing,
				`no ReferenceGrant in namespace "prod"`, `from "dev"`, `PersistentVolumeClaim "db"`,
				`to {group: "", kind: PersistentVolumeClaim, name: "db"}`)},
			wantChecks: 1,
		},
		{
			name: "grant allows the snapshot", objects: prodSnapshot(), claim: fromSnapshot("prod", "nightly"),
			setup:       func(e *env) { e.grants.Allow(nightlyRef, "allow-dev") },
			wantState:   controller.ProvisioningFinished,
			wantContent: snapshotSource("snap-nightly"),
			wantEvents: []wantEvent{
				claimEvent(v1.EventTypeNormal, events.ProvisionedFromSource, "Provisioned "+pvName+" from VolumeSnapshot prod/nightly under ReferenceGrant prod/allow-dev"),
				sourceEvent("VolumeSnapshot", "Used as the source of dev/copy under ReferenceGrant prod/allow-dev"),
			},
			wantAnn: map[string]string{
				SourceNamespaceAnnotation: "prod", SourceKindAnnotation: "VolumeSnapshot", SourceNameAnnotation: "nightly",
				ReferenceGrantAnnotation: "allow-dev",
			},
			wantChecks: 4,
		},
		{
			name: "grant allows the claim", objects: prodClaim(), claim: fromClaim("prod", "db"),
			setup:       func(e *env) { e.grants.Allow(dbRef, "clone-db") },
			wantState:   controller.ProvisioningFinished,
			wantContent: volumeSource("vol-db"),
			wantEvents: []wantEvent{
				claimEvent(v1.EventTypeNormal, events.ProvisionedFromSource, "from PersistentVolumeClaim prod/db under ReferenceGrant prod/clone-db"),
				sourceEvent("PersistentVolumeClaim", "Used as the source of dev/copy under ReferenceGrant prod/clone-db"),
			},
			wantAnn: map[string]string{
				SourceNamespaceAnnotation: "prod", SourceKindAnnotation: "PersistentVolumeClaim", SourceNameAnnotation: "db",
				ReferenceGrantAnnotation: "clone-db",
			},
			wantChecks: 4,
		},
		{
			name: "grant present, snapshot not ready: the user must wait", claim: fromSnapshot("prod", "nightly"),
			objects: objs(readySnapshot("prod", "nightly", "content-nightly", "1Gi", func(s *snapshotv1.VolumeSnapshot) { s.Status.ReadyToUse = ptr.To(false) }),
				boundContent("content-nightly", "prod", "nightly", "snap-nightly")),
			setup:     func(e *env) { e.grants.Allow(nightlyRef, "allow-dev") },
			wantState: controller.ProvisioningFinished, wantErr: "VolumeSnapshot prod/nightly is not ready to use yet",
			wantChecks: 1,
		},
		{
			name: "grants unavailable", objects: prodSnapshot(), claim: fromSnapshot("prod", "nightly"),
			setup: func(e *env) {
				e.grants.Allow(nightlyRef, "allow-dev")
				e.grants.SetError(fmt.Errorf("the ReferenceGrant CRD is not installed: %w", referencegrant.ErrUnavailable))
			},
			wantState: controller.ProvisioningFinished, wantIgnored: true, wantErr: "cannot decide",
			wantEvents: []wantEvent{claimEvent(v1.EventTypeWarning, events.ReferenceGrantsUnavailable,
				"cannot decide whether VolumeSnapshot prod/nightly may be used", "CRD is not installed", "list and watch referencegrants")},
			wantChecks: 1,
		},
		{
			name: "grant check fails otherwise: retried, no Event", objects: prodSnapshot(), claim: fromSnapshot("prod", "nightly"),
			setup:     func(e *env) { e.grants.SetError(errors.New("index corrupt")) },
			wantState: controller.ProvisioningNoChange, wantErr: "checking ReferenceGrants for VolumeSnapshot prod/nightly: index corrupt",
			wantChecks: 1,
		},
		{
			name: "dataSourceRef naming the claim's own namespace needs no grant", claim: fromSnapshot("dev", "nightly"),
			objects:     objs(readySnapshot("dev", "nightly", "content-1", "1Gi"), boundContent("content-1", "dev", "nightly", "snap-dev")),
			setup:       func(e *env) { e.resolver.CrossNamespace, e.resolver.Grants = false, nil },
			wantState:   controller.ProvisioningFinished,
			wantContent: snapshotSource("snap-dev"),
			wantEvents:  []wantEvent{claimEvent(v1.EventTypeNormal, events.ProvisionedFromSource, "from VolumeSnapshot dev/nightly")},
			wantAnn:     map[string]string{SourceNamespaceAnnotation: "dev", SourceKindAnnotation: "VolumeSnapshot", SourceNameAnnotation: "nightly"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, tc.objects...)
			if tc.setup != nil {
				tc.setup(e)
			}
			claim := newClaim("dev", "copy", tc.claim)
			claim.Spec.DataSource = nil // kube-apiserver leaves it empty for a cross-namespace dataSourceRef
			pv, state, err := e.provision(claim, newClass(nil))
			if state != tc.wantState {
				t.Errorf("state = %s, want %s", state, tc.wantState)
			}
			assertErr(t, err, tc.wantErr)
			if isIgnored(err) != tc.wantIgnored {
				t.Errorf("IgnoredError = %v, want %v (err %v)", isIgnored(err), tc.wantIgnored, err)
			}
			e.assertEvents(t, tc.wantEvents...)
			if n := len(e.grants.Checked()); n != tc.wantChecks {
				t.Errorf("grants consulted %d times, want %d: %v", n, tc.wantChecks, e.grants.Checked())
			}
			if tc.wantContent == nil {
				e.assertNoCreate(t)
				if pv != nil {
					t.Errorf("got PV %s, want none", pv.Name)
				}
				return
			}
			if got := e.onlyCreate(t).VolumeContentSource; !proto.Equal(got, tc.wantContent) {
				t.Errorf("content source = %v, want %v", got, tc.wantContent)
			}
			if pv == nil {
				t.Fatalf("no PV")
			}
			if !reflect.DeepEqual(provenance(pv), tc.wantAnn) {
				t.Errorf("PV annotations = %v, want %v", pv.Annotations, tc.wantAnn)
			}
		})
	}
}

// TestCrossNamespaceGrantReference checks the reference the grants are asked
// about: the claim's side (core PersistentVolumeClaims of its namespace) and
// the source's (group, kind, namespace and name).
func TestCrossNamespaceGrantReference(t *testing.T) {
	tests := []struct {
		name    string
		objects []runtime.Object
		claim   func(*v1.PersistentVolumeClaim)
		want    referencegrant.Reference
	}{
		{name: "snapshot", objects: prodSnapshot(), claim: fromSnapshot("prod", "nightly"), want: nightlyRef},
		{name: "claim", objects: prodClaim(), claim: fromClaim("prod", "db"), want: dbRef},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, tc.objects...)
			e.grants.Allow(tc.want, "g")
			if _, _, err := e.provision(newClaim("dev", "copy", tc.claim), newClass(nil)); err != nil {
				t.Fatalf("Provision: %v", err)
			}
			for i, got := range e.grants.Checked() {
				if got != tc.want {
					t.Errorf("check %d asked about %+v, want %+v", i, got, tc.want)
				}
			}
			if want := []string{datasource.Ref{Kind: tc.want.ToKind, Namespace: "prod", Name: tc.want.ToName}.String()}; !reflect.DeepEqual(e.protector.protected, want) {
				t.Errorf("protected %v, want %v", e.protector.protected, want)
			}
		})
	}
}
