package datasource

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	snapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	v1 "k8s.io/api/core/v1"

	"github.com/crossns/external-provisioner/pkg/events"
	"github.com/crossns/external-provisioner/pkg/referencegrant"
)

// TestResolveCrossNamespace provisions dev/copy from a source in namespace
// prod: VolumeSnapshot prod/nightly or PersistentVolumeClaim prod/db.
func TestResolveCrossNamespace(t *testing.T) {
	snapRef := referencegrant.Reference{
		FromGroup: "", FromKind: ClaimKind, FromNamespace: "dev",
		ToGroup: SnapshotGroup, ToKind: SnapshotKind, ToNamespace: "prod", ToName: "nightly",
	}
	claimRef := referencegrant.Reference{
		FromGroup: "", FromKind: ClaimKind, FromNamespace: "dev",
		ToGroup: "", ToKind: ClaimKind, ToNamespace: "prod", ToName: "db",
	}
	boom := errors.New("index corrupted")
	allow := func(ref referencegrant.Reference, grant string) func(*referencegrant.Fake) {
		return func(f *referencegrant.Fake) { f.Allow(ref, grant) }
	}
	failWith := func(err error) func(*referencegrant.Fake) {
		return func(f *referencegrant.Fake) { f.SetError(err) }
	}

	tests := []struct {
		name string
		// kind is the source's kind: SnapshotKind (prod/nightly) or ClaimKind (prod/db).
		kind string
		gate bool
		// noChecker leaves Resolver.Grants nil.
		noChecker bool
		grants    func(*referencegrant.Fake)
		// sourceMissing leaves the source out of the caches.
		sourceMissing bool

		// wantDenial is the DenialReason of a Denied *Error.
		wantDenial   string
		wantReason   string
		wantMessages []string
		// wantInvalid is the reason of an Invalid *Error (found after the grant).
		wantInvalid   string
		wantTransient bool
		wantGrant     string
		wantChecked   []referencegrant.Reference
	}{
		{
			name:       "gate off refuses before asking for grants",
			kind:       SnapshotKind,
			grants:     allow(snapRef, "allow-dev"),
			wantDenial: "gate_disabled", wantReason: events.CrossNamespaceGateDisabled,
			wantMessages: []string{"VolumeSnapshot prod/nightly", "--feature-gates=CrossNamespaceVolumeDataSource=true"},
		},
		{
			name:       "gate on without a grant checker refuses",
			kind:       ClaimKind,
			gate:       true,
			noChecker:  true,
			wantDenial: "gate_disabled", wantReason: events.CrossNamespaceGateDisabled,
		},
		{
			name:       "no grant for a snapshot",
			kind:       SnapshotKind,
			gate:       true,
			wantDenial: "no_grant", wantReason: events.ReferenceGrantMissing,
			wantMessages: []string{
				`no ReferenceGrant in namespace "prod" allows PersistentVolumeClaims from "dev" to use VolumeSnapshot "nightly"`,
				`the owner of "prod" creates a ReferenceGrant in namespace "prod" with from {group: "", kind: PersistentVolumeClaim, namespace: "dev"} and to {group: "snapshot.storage.k8s.io", kind: VolumeSnapshot, name: "nightly"}`,
			},
			wantChecked: []referencegrant.Reference{snapRef},
		},
		{
			name:       "no grant for a claim",
			kind:       ClaimKind,
			gate:       true,
			wantDenial: "no_grant", wantReason: events.ReferenceGrantMissing,
			wantMessages: []string{
				`no ReferenceGrant in namespace "prod" allows PersistentVolumeClaims from "dev" to use PersistentVolumeClaim "db"`,
				`to {group: "", kind: PersistentVolumeClaim, name: "db"}`,
			},
			wantChecked: []referencegrant.Reference{claimRef},
		},
		{
			name:       "a grant for another snapshot does not allow this one",
			kind:       SnapshotKind,
			gate:       true,
			grants:     allow(referencegrant.Reference{FromKind: ClaimKind, FromNamespace: "dev", ToGroup: SnapshotGroup, ToKind: SnapshotKind, ToNamespace: "prod", ToName: "weekly"}, "allow-weekly"),
			wantDenial: "no_grant", wantReason: events.ReferenceGrantMissing,
			wantChecked: []referencegrant.Reference{snapRef},
		},
		{
			name:       "grants unavailable",
			kind:       SnapshotKind,
			gate:       true,
			grants:     failWith(fmt.Errorf("%w: the ReferenceGrant CRD is not installed", referencegrant.ErrUnavailable)),
			wantDenial: "grants_unavailable", wantReason: events.ReferenceGrantsUnavailable,
			wantMessages: []string{"cannot decide whether VolumeSnapshot prod/nightly may be used", "the ReferenceGrant CRD is not installed"},
			wantChecked:  []referencegrant.Reference{snapRef},
		},
		{
			name:          "other grant error is transient",
			kind:          ClaimKind,
			gate:          true,
			grants:        failWith(boom),
			wantTransient: true,
			wantChecked:   []referencegrant.Reference{claimRef},
		},
		{
			name:        "granted snapshot restores",
			kind:        SnapshotKind,
			gate:        true,
			grants:      allow(snapRef, "allow-dev"),
			wantGrant:   "allow-dev",
			wantChecked: []referencegrant.Reference{snapRef},
		},
		{
			name:        "granted claim clones",
			kind:        ClaimKind,
			gate:        true,
			grants:      allow(claimRef, "clone-db"),
			wantGrant:   "clone-db",
			wantChecked: []referencegrant.Reference{claimRef},
		},
		{
			name:          "granted snapshot that does not exist",
			kind:          SnapshotKind,
			gate:          true,
			grants:        allow(snapRef, "allow-dev"),
			sourceMissing: true,
			wantInvalid:   reasonSourceNotFound,
			wantChecked:   []referencegrant.Reference{snapRef},
		},
		{
			name:          "granted claim that does not exist",
			kind:          ClaimKind,
			gate:          true,
			grants:        allow(claimRef, "clone-db"),
			sourceMissing: true,
			wantInvalid:   reasonSourceNotFound,
			wantChecked:   []referencegrant.Reference{claimRef},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			snap := readySnapshot("prod", "nightly")
			db := boundClaim("prod", "db")
			w := world{}
			if !tc.sourceMissing {
				w = world{
					snapshots: []*snapshotv1.VolumeSnapshot{snap},
					contents:  []*snapshotv1.VolumeSnapshotContent{contentOf(snap)},
					claims:    []*v1.PersistentVolumeClaim{db},
					volumes:   []*v1.PersistentVolume{volumeOf(db)},
				}
			}
			r, log := newResolver(t, w)
			r.CrossNamespace = tc.gate
			grants := referencegrant.NewFake()
			if tc.grants != nil {
				tc.grants(grants)
			}
			if !tc.noChecker {
				r.Grants = grants
			}
			source := "nightly"
			if tc.kind == ClaimKind {
				source = "db"
			}
			claim := pendingClaim("dev", "copy", tc.kind, "prod", source)

			src, err := r.Resolve(claim, Request{Bytes: gi, Mode: v1.PersistentVolumeFilesystem})

			if got := grants.Checked(); !slices.Equal(got, tc.wantChecked) {
				t.Errorf("grants checked = %+v, want %+v", got, tc.wantChecked)
			}
			reads := log.reads()
			switch {
			case tc.wantDenial != "":
				e := wantFailure(t, err, Denied, tc.wantReason)
				if e.DenialReason != tc.wantDenial {
					t.Errorf("DenialReason = %q, want %q", e.DenialReason, tc.wantDenial)
				}
				for _, m := range tc.wantMessages {
					if !strings.Contains(e.Message, m) {
						t.Errorf("message = %q\nwant it to contain %q", e.Message, m)
					}
				}
				// A denied claim learns nothing about namespace prod.
				if len(reads) > 0 {
					t.Errorf("denied Resolve() read %v; want no reads", reads)
				}
			case tc.wantTransient:
				if _, ok := AsError(err); ok || !errors.Is(err, boom) {
					t.Fatalf("Resolve() error = %v, want a transient error wrapping %v", err, boom)
				}
				if len(reads) > 0 {
					t.Errorf("undecided Resolve() read %v; want no reads", reads)
				}
			case tc.wantInvalid != "":
				wantFailure(t, err, Invalid, tc.wantInvalid)
			default:
				if err != nil {
					t.Fatalf("Resolve() error = %v", err)
				}
				if !src.CrossNamespace || src.Grant != tc.wantGrant {
					t.Errorf("CrossNamespace, Grant = %v, %q; want true, %q", src.CrossNamespace, src.Grant, tc.wantGrant)
				}
				wantID := "handle-nightly"
				gotID := src.Content.GetSnapshot().GetSnapshotId()
				if tc.kind == ClaimKind {
					wantID, gotID = "vol-prod-db", src.Content.GetVolume().GetVolumeId()
				}
				if gotID != wantID {
					t.Errorf("content source id = %q, want %q", gotID, wantID)
				}
				for _, r := range reads {
					if strings.Contains(r, " dev") {
						t.Errorf("Resolve() read %q; the source is in prod", r)
					}
				}
			}
		})
	}
}

// TestAuthorizeRecheck checks that Authorize answers from the grants as they
// are now, so the re-check before CreateVolume honours a revoked grant.
func TestAuthorizeRecheck(t *testing.T) {
	ref := Ref{Group: SnapshotGroup, Kind: SnapshotKind, Namespace: "prod", Name: "nightly"}
	gref := referencegrant.Reference{
		FromKind: ClaimKind, FromNamespace: "dev",
		ToGroup: SnapshotGroup, ToKind: SnapshotKind, ToNamespace: "prod", ToName: "nightly",
	}
	tests := []struct {
		name       string
		change     func(*referencegrant.Fake)
		wantGrant  string
		wantDenial string
	}{
		{name: "grant still there", change: func(*referencegrant.Fake) {}, wantGrant: "allow-dev"},
		{name: "grant revoked", change: func(f *referencegrant.Fake) { f.Revoke(gref) }, wantDenial: "no_grant"},
		{name: "grant replaced by another", change: func(f *referencegrant.Fake) { f.Allow(gref, "allow-dev-v2") }, wantGrant: "allow-dev-v2"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			grants := referencegrant.NewFake()
			grants.Allow(gref, "allow-dev")
			r := &Resolver{DriverName: driver, CrossNamespace: true, Grants: grants}
			claim := pendingClaim("dev", "copy", SnapshotKind, "prod", "nightly")
			if g, err := r.Authorize(claim, ref); err != nil || g != "allow-dev" {
				t.Fatalf("first Authorize() = %q, %v; want allow-dev", g, err)
			}
			tc.change(grants)
			g, err := r.Authorize(claim, ref)
			if tc.wantDenial != "" {
				e := wantFailure(t, err, Denied, events.ReferenceGrantMissing)
				if e.DenialReason != tc.wantDenial {
					t.Errorf("DenialReason = %q, want %q", e.DenialReason, tc.wantDenial)
				}
				return
			}
			if err != nil || g != tc.wantGrant {
				t.Errorf("Authorize() = %q, %v; want %q", g, err, tc.wantGrant)
			}
		})
	}
}
