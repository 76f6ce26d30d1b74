package provisioner

import (
	"errors"
	"reflect"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	snapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	"google.golang.org/protobuf/proto"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/sig-storage-lib-external-provisioner/v10/controller"

	"github.com/crossns/external-provisioner/pkg/datasource"
	"github.com/crossns/external-provisioner/pkg/events"
)

// sameNamespaceCase is one claim with a data source in its own namespace.
type sameNamespaceCase struct {
	name    string
	objects []runtime.Object
	claim   []func(*v1.PersistentVolumeClaim)
	// allowModeChange turns the resolver's volume mode conversion guard off
	allowModeChange bool
	// wantContent is what CreateVolume gets; nil with wantErr
	wantContent *csi.VolumeContentSource
	// wantSource is the source as users write it, e.g. "VolumeSnapshot dev/nightly"
	wantSource string
	wantErr    string
}

// runSameNamespace provisions the case's claim and checks what the user sees:
// the content source the driver got, protection of the source, the PV's
// provenance and the claim's Event; or, for a source the user must fix, an
// error the loop reports and no CreateVolume at all.
func runSameNamespace(t *testing.T, tc sameNamespaceCase) {
	e := newEnv(t, tc.objects...)
	e.resolver.PreventVolumeModeConversion = !tc.allowModeChange
	pv, state, err := e.provision(newClaim("dev", "data", tc.claim...), newClass(nil))
	if tc.wantErr != "" {
		assertRefused(t, e, pv, state, err, tc.wantErr)
		if len(e.protector.protected) != 0 {
			t.Errorf("protected %v, want nothing for a refused source", e.protector.protected)
		}
		return
	}
	assertErr(t, err, "")
	if got := e.onlyCreate(t).VolumeContentSource; !proto.Equal(got, tc.wantContent) {
		t.Errorf("content source = %v, want %v", got, tc.wantContent)
	}
	if want := []string{tc.wantSource}; !reflect.DeepEqual(e.protector.protected, want) {
		t.Errorf("protected %v, want %v", e.protector.protected, want)
	}
	ref, _ := datasource.RefOf(newClaim("dev", "data", tc.claim...))
	wantAnn := map[string]string{SourceNamespaceAnnotation: "dev", SourceKindAnnotation: ref.Kind, SourceNameAnnotation: ref.Name}
	if !reflect.DeepEqual(provenance(pv), wantAnn) {
		t.Errorf("PV annotations = %v, want %v (and no grant within one namespace)", pv.Annotations, wantAnn)
	}
	e.assertEvents(t, claimEvent(v1.EventTypeNormal, events.ProvisionedFromSource, "Provisioned "+pvName+" from "+tc.wantSource))
}

func TestRestoreFromSnapshotInSameNamespace(t *testing.T) {
	snap := func(mods ...func(*snapshotv1.VolumeSnapshot)) *snapshotv1.VolumeSnapshot {
		return readySnapshot("dev", "nightly", "content-1", "1Gi", mods...)
	}
	content := func(mods ...func(*snapshotv1.VolumeSnapshotContent)) *snapshotv1.VolumeSnapshotContent {
		return boundContent("content-1", "dev", "nightly", "snap-handle-1", mods...)
	}
	fsToBlock := mods(fromSnapshot("", "nightly"), withMode(v1.PersistentVolumeBlock))
	allowAnn := func(v string) func(*snapshotv1.VolumeSnapshotContent) {
		return func(c *snapshotv1.VolumeSnapshotContent) {
			c.Annotations = map[string]string{datasource.AllowVolumeModeChangeAnnotation: v}
		}
	}
	ok := snapshotSource("snap-handle-1")
	const src = "VolumeSnapshot dev/nightly"
	tests := []sameNamespaceCase{
		{name: "ready snapshot", objects: objs(snap(), content()), claim: mods(fromSnapshot("", "nightly")), wantContent: ok, wantSource: src},
		{name: "legacy dataSource field", objects: objs(snap(), content()), claim: mods(func(c *v1.PersistentVolumeClaim) {
			c.Spec.DataSource = &v1.TypedLocalObjectReference{APIGroup: ptr.To(datasource.SnapshotGroup), Kind: datasource.SnapshotKind, Name: "nightly"}
		}), wantContent: ok, wantSource: src},
		{name: "claim larger than the restore size", objects: objs(snap(), content()), claim: mods(fromSnapshot("", "nightly"), withRequest("5Gi")), wantContent: ok, wantSource: src},
		{name: "snapshot without restore size", objects: objs(snap(func(s *snapshotv1.VolumeSnapshot) { s.Status.RestoreSize = nil }), content()),
			claim: mods(fromSnapshot("", "nightly")), wantContent: ok, wantSource: src},
		{name: "not ready", objects: objs(snap(func(s *snapshotv1.VolumeSnapshot) { s.Status.ReadyToUse = ptr.To(false) }), content()),
			claim: mods(fromSnapshot("", "nightly")), wantErr: "is not ready to use yet"},
		{name: "not bound to a content", objects: objs(snap(func(s *snapshotv1.VolumeSnapshot) { s.Status.BoundVolumeSnapshotContentName = nil }), content()),
			claim: mods(fromSnapshot("", "nightly")), wantErr: "not bound to a VolumeSnapshotContent yet"},
		{name: "no status", objects: objs(snap(func(s *snapshotv1.VolumeSnapshot) { s.Status = nil }), content()),
			claim: mods(fromSnapshot("", "nightly")), wantErr: "not bound to a VolumeSnapshotContent yet"},
		{name: "snapshot not found", objects: objs(content()), claim: mods(fromSnapshot("", "nightly")), wantErr: "VolumeSnapshot dev/nightly not found"},
		{name: "snapshot being deleted", objects: objs(snap(func(s *snapshotv1.VolumeSnapshot) { s.DeletionTimestamp = &metav1.Time{} }), content()),
			claim: mods(fromSnapshot("", "nightly")), wantErr: "is being deleted"},
		{name: "content not found", objects: objs(snap()), claim: mods(fromSnapshot("", "nightly")), wantErr: `VolumeSnapshotContent "content-1" of VolumeSnapshot dev/nightly not found`},
		{name: "content bound to another snapshot", objects: objs(snap(), boundContent("content-1", "dev", "weekly", "snap-handle-1")),
			claim: mods(fromSnapshot("", "nightly")), wantErr: `VolumeSnapshotContent "content-1" is not bound to VolumeSnapshot dev/nightly`},
		{name: "content bound to a snapshot of that name in another namespace", objects: objs(snap(), boundContent("content-1", "prod", "nightly", "snap-handle-1")),
			claim: mods(fromSnapshot("", "nightly")), wantErr: "is not bound to"},
		{name: "content bound to an older snapshot of that name", objects: objs(snap(), content(func(c *snapshotv1.VolumeSnapshotContent) { c.Spec.VolumeSnapshotRef.UID = "old-uid" })),
			claim: mods(fromSnapshot("", "nightly")), wantErr: "is not bound to"},
		{name: "snapshot of another driver", objects: objs(snap(), content(func(c *snapshotv1.VolumeSnapshotContent) { c.Spec.Driver = "ebs.csi.aws.com" })),
			claim: mods(fromSnapshot("", "nightly")), wantErr: `was taken by driver "ebs.csi.aws.com"`},
		{name: "content without snapshot handle", objects: objs(snap(), content(func(c *snapshotv1.VolumeSnapshotContent) { c.Status = nil })),
			claim: mods(fromSnapshot("", "nightly")), wantErr: "has no snapshot handle yet"},
		{name: "claim smaller than the restore size", objects: objs(readySnapshot("dev", "nightly", "content-1", "2Gi"), content()),
			claim: mods(fromSnapshot("", "nightly")), wantErr: "requested size 1Gi is smaller than the restore size 2Gi"},
		{name: "Filesystem snapshot restored as Block refused", objects: objs(snap(), content()), claim: fsToBlock, wantErr: "allow-volume-mode-change=true"},
		{name: "Block snapshot restored as Filesystem refused", objects: objs(snap(), content(func(c *snapshotv1.VolumeSnapshotContent) {
			c.Spec.SourceVolumeMode = ptr.To(v1.PersistentVolumeBlock)
		})), claim: mods(fromSnapshot("", "nightly")), wantErr: "taken from a Block volume and the claim asks for Filesystem"},
		{name: "mode change allowed by the content annotation", objects: objs(snap(), content(allowAnn("true"))), claim: fsToBlock, wantContent: ok, wantSource: src},
		{name: "mode change annotation false", objects: objs(snap(), content(allowAnn("false"))), claim: fsToBlock, wantErr: "allow-volume-mode-change"},
		{name: "mode change annotation on the snapshot does not count", objects: objs(snap(func(s *snapshotv1.VolumeSnapshot) {
			s.Annotations = map[string]string{datasource.AllowVolumeModeChangeAnnotation: "true"}
		}), content()), claim: fsToBlock, wantErr: "allow-volume-mode-change"},
		{name: "mode change without the guard", objects: objs(snap(), content()), claim: fsToBlock, allowModeChange: true, wantContent: ok, wantSource: src},
		{name: "content without source volume mode", objects: objs(snap(), content(func(c *snapshotv1.VolumeSnapshotContent) { c.Spec.SourceVolumeMode = nil })),
			claim: fsToBlock, wantContent: ok, wantSource: src},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { runSameNamespace(t, tc) })
	}
}

func TestCloneInSameNamespace(t *testing.T) {
	source := func(size string, mods ...func(*v1.PersistentVolumeClaim)) *v1.PersistentVolumeClaim {
		return boundClaim("dev", "src", "pv-src", size, mods...)
	}
	pv := volumeOf(source("1Gi"), driverName, "vol-src")
	ok := volumeSource("vol-src")
	const src = "PersistentVolumeClaim dev/src"
	tests := []sameNamespaceCase{
		{name: "bound source", objects: objs(source("1Gi"), pv), claim: mods(fromClaim("", "src")), wantContent: ok, wantSource: src},
		{name: "clone larger than the source", objects: objs(source("1Gi"), pv), claim: mods(fromClaim("", "src"), withRequest("3Gi")), wantContent: ok, wantSource: src},
		{name: "block clone of a block source", objects: objs(source("1Gi", withMode(v1.PersistentVolumeBlock)), pv),
			claim: mods(fromClaim("", "src"), withMode(v1.PersistentVolumeBlock)), wantContent: ok, wantSource: src},
		{name: "clone smaller than the source", objects: objs(source("2Gi"), pv), claim: mods(fromClaim("", "src")),
			wantErr: "requested size 1Gi is smaller than the size 2Gi of PersistentVolumeClaim dev/src"},
		{name: "Block clone of a Filesystem source", objects: objs(source("1Gi"), pv), claim: mods(fromClaim("", "src"), withMode(v1.PersistentVolumeBlock)),
			wantErr: "a clone keeps the source's volume mode"},
		{name: "Filesystem clone of a Block source", objects: objs(source("1Gi", withMode(v1.PersistentVolumeBlock)), pv), claim: mods(fromClaim("", "src")),
			wantErr: "is a Block volume and the claim asks for Filesystem"},
		{name: "source of another driver", objects: objs(source("1Gi"), volumeOf(source("1Gi"), "ebs.csi.aws.com", "vol-src")), claim: mods(fromClaim("", "src")),
			wantErr: `is not a volume of driver "` + driverName + `"`},
		{name: "source not a CSI volume", objects: objs(source("1Gi"), &v1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: "pv-src"}, Spec: v1.PersistentVolumeSpec{ClaimRef: pv.Spec.ClaimRef}}), claim: mods(fromClaim("", "src")),
			wantErr: "is not a volume of driver"},
		{name: "source's PV bound to another claim", objects: objs(source("1Gi"), volumeOf(boundClaim("dev", "other", "pv-src", "1Gi"), driverName, "vol-src")),
			claim: mods(fromClaim("", "src")), wantErr: `PersistentVolume "pv-src" is not bound to PersistentVolumeClaim dev/src`},
		{name: "source's PV bound to an older claim of that name", objects: objs(source("1Gi"), volumeOf(source("1Gi", withUID("old-uid")), driverName, "vol-src")),
			claim: mods(fromClaim("", "src")), wantErr: "is not bound to"},
		{name: "source not bound", objects: objs(source("1Gi", func(c *v1.PersistentVolumeClaim) { c.Status.Phase = v1.ClaimPending }), pv),
			claim: mods(fromClaim("", "src")), wantErr: "PersistentVolumeClaim dev/src is not bound yet"},
		{name: "source PV not found", objects: objs(source("1Gi")), claim: mods(fromClaim("", "src")), wantErr: `PersistentVolume "pv-src" of PersistentVolumeClaim dev/src not found`},
		{name: "source not found", objects: objs(pv), claim: mods(fromClaim("", "src")), wantErr: "PersistentVolumeClaim dev/src not found"},
		{name: "source being deleted", objects: objs(source("1Gi", func(c *v1.PersistentVolumeClaim) { c.DeletionTimestamp = &metav1.Time{} }), pv),
			claim: mods(fromClaim("", "src")), wantErr: "is being deleted"},
		{name: "clone of itself", objects: objs(pv), claim: mods(fromClaim("", "data")), wantErr: "cannot be cloned from itself"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { runSameNamespace(t, tc) })
	}
}

// TestSourceProtectionFails: a source that cannot be protected is not used;
// the claim is retried.
func TestSourceProtectionFails(t *testing.T) {
	tests := []struct {
		name    string
		objects []runtime.Object
		claim   func(*v1.PersistentVolumeClaim)
		wantErr string
	}{
		{name: "clone", objects: objs(boundClaim("dev", "src", "pv-src", "1Gi"), volumeOf(boundClaim("dev", "src", "pv-src", "1Gi"), driverName, "vol-src")),
			claim: fromClaim("", "src"), wantErr: "protecting PersistentVolumeClaim dev/src while it is used: conflict"},
		{name: "snapshot", objects: objs(readySnapshot("dev", "nightly", "content-1", "1Gi"), boundContent("content-1", "dev", "nightly", "h")),
			claim: fromSnapshot("", "nightly"), wantErr: "protecting VolumeSnapshot dev/nightly while it is used: conflict"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, tc.objects...)
			e.protector.err = errors.New("conflict")
			pv, state, err := e.provision(newClaim("dev", "data", tc.claim), newClass(nil))
			assertErr(t, err, tc.wantErr)
			if pv != nil || isIgnored(err) || state != controller.ProvisioningNoChange {
				t.Errorf("got PV %v, ignored %v, state %s; want no PV, a reported error, NoChange", pv, isIgnored(err), state)
			}
			e.assertNoCreate(t)
		})
	}
}

// TestPopulatorClaimGetsEvent: a claim whose dataSourceRef names a kind this
// sidecar does not provision from is left to its volume populator, and its
// user is told so with upstream's Normal "Provisioning" Event; nothing is
// created, and the loop stops (IgnoredError) instead of retrying.
func TestPopulatorClaimGetsEvent(t *testing.T) {
	tests := []struct {
		name  string
		claim func(*v1.PersistentVolumeClaim)
		// wantWords are in the Event's message; none: no Event, a volume.
		wantWords []string
	}{
		{name: "no data source is provisioned", claim: func(*v1.PersistentVolumeClaim) {}},
		{name: "populator kind", claim: withSourceRef("backup.example.com", "Backup", "", "monday"),
			wantWords: []string{"Backup.backup.example.com dev/monday", "external volume populator"}},
		{name: "populator kind in another namespace", claim: withSourceRef("backup.example.com", "Backup", "prod", "monday"),
			wantWords: []string{"Backup.backup.example.com prod/monday", "external volume populator"}},
		{name: "VolumeSnapshot kind of another group", claim: withSourceRef("backup.example.com", "VolumeSnapshot", "", "nightly"),
			wantWords: []string{"VolumeSnapshot.backup.example.com dev/nightly"}},
		{name: "core kind that is no claim", claim: withSourceRef("", "ConfigMap", "", "seed"),
			wantWords: []string{"ConfigMap dev/seed", "external volume populator"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			pv, state, err := e.provision(newClaim("dev", "data", tc.claim), newClass(nil))
			if tc.wantWords == nil {
				assertErr(t, err, "")
				if pv == nil {
					t.Fatal("got no PV")
				}
				e.assertEvents(t)
				return
			}
			if pv != nil || state != controller.ProvisioningFinished || !isIgnored(err) {
				t.Fatalf("got PV %v, state %s, err %v; want no PV, Finished, IgnoredError", pv, state, err)
			}
			e.assertNoCreate(t)
			e.assertEvents(t, claimEvent(v1.EventTypeNormal, events.ExternalPopulatorExpected, tc.wantWords...))
		})
	}
}

func objs(o ...runtime.Object) []runtime.Object { return o }

// TestMalformedSourceRefusedOnce: a dataSourceRef that can name no source
// (a snapshot kind in the wrong case, apiGroup "core", a name no object can
// have) gets one Warning saying what is wrong, nothing is created, and the
// loop stops: the field cannot change, retrying never helps. The grant is
// not even asked for.
func TestMalformedSourceRefusedOnce(t *testing.T) {
	tests := []struct {
		name      string
		claim     func(*v1.PersistentVolumeClaim)
		wantWords []string
	}{
		{name: "snapshot kind in lower case", claim: withSourceRef(datasource.SnapshotGroup, "volumesnapshot", "prod", "nightly"),
			wantWords: []string{`kind "volumesnapshot"`, "case-sensitive", "did you mean VolumeSnapshot", "create the claim again"}},
		{name: "apiGroup core", claim: withSourceRef("core", "PersistentVolumeClaim", "", "data-src"),
			wantWords: []string{`apiGroup "core"`, "leaving apiGroup out"}},
		{name: "snapshot name with a space", claim: withSourceRef(datasource.SnapshotGroup, datasource.SnapshotKind, "prod", "night ly"),
			wantWords: []string{`VolumeSnapshot "night ly"`, "not a valid object name"}},
		{name: "claim name with a slash", claim: withSourceRef("", datasource.ClaimKind, "", "../data"),
			wantWords: []string{`PersistentVolumeClaim "../data"`, "not a valid object name"}},
		{name: "snapshot without a name", claim: withSourceRef(datasource.SnapshotGroup, datasource.SnapshotKind, "", ""),
			wantWords: []string{"VolumeSnapshot without a name"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			pv, state, err := e.provision(newClaim("dev", "data", tc.claim), newClass(nil))
			if pv != nil || state != controller.ProvisioningFinished || !isIgnored(err) {
				t.Fatalf("got PV %v, state %s, err %v; want no PV, Finished, IgnoredError", pv, state, err)
			}
			e.assertNoCreate(t)
			e.assertEvents(t, claimEvent(v1.EventTypeWarning, events.DataSourceInvalid, tc.wantWords...))
			if checked := e.grants.Checked(); len(checked) > 0 {
				t.Errorf("grants consulted for a malformed reference: %v", checked)
			}
		})
	}
}
