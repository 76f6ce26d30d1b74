package protection

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"

	snapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	clienttesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/utils/ptr"

	"github.com/crossns/external-provisioner/pkg/datasource"
)

func boundSnapshot(ns, name, content string, finalizers ...string) *snapshotv1.VolumeSnapshot {
	s := sourceSnapshot(ns, name, finalizers...)
	s.Status = &snapshotv1.VolumeSnapshotStatus{BoundVolumeSnapshotContentName: ptr.To(content), ReadyToUse: ptr.To(true)}
	return s
}

func content(name, snapNS, snapName string, policy snapshotv1.DeletionPolicy, annotations map[string]string) *snapshotv1.VolumeSnapshotContent {
	return &snapshotv1.VolumeSnapshotContent{
		ObjectMeta: metav1.ObjectMeta{Name: name, ResourceVersion: "7", Annotations: annotations},
		Spec: snapshotv1.VolumeSnapshotContentSpec{
			DeletionPolicy:    policy,
			Driver:            testDriver,
			VolumeSnapshotRef: v1.ObjectReference{Namespace: snapNS, Name: snapName},
		},
	}
}

// contentWrites returns the patches (as decoded JSON) and deletes sent for contents.
func (f *fixture) contentWrites(t *testing.T) (patches []map[string]any, deletes []string) {
	t.Helper()
	for _, a := range f.snapClient.Actions() {
		if a.GetResource().Resource != "volumesnapshotcontents" {
			continue
		}
		switch a := a.(type) {
		case clienttesting.PatchAction:
			var body map[string]any
			if err := json.Unmarshal(a.GetPatch(), &body); err != nil {
				t.Fatal(err)
			}
			patches = append(patches, body)
		case clienttesting.DeleteAction:
			deletes = append(deletes, a.GetName())
		}
	}
	return patches, deletes
}

// TestProtectHoldsContent: restoring a snapshot holds its content at Retain
// (issue 8 item 1); a content at Retain, or held already, is left alone.
func TestProtectHoldsContent(t *testing.T) {
	tests := []struct {
		name     string
		content  *snapshotv1.VolumeSnapshotContent
		wantHold bool
	}{
		{name: "Delete policy: held at Retain, original recorded", content: content("c1", "prod", "nightly", snapshotv1.VolumeSnapshotContentDelete, nil), wantHold: true},
		{name: "Retain policy: nothing to hold", content: content("c1", "prod", "nightly", snapshotv1.VolumeSnapshotContentRetain, nil)},
		{name: "held already (after a restart)", content: content("c1", "prod", "nightly", snapshotv1.VolumeSnapshotContentRetain, map[string]string{HeldPolicyAnnotation: "Delete"})},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			snap := boundSnapshot("prod", "nightly", "c1")
			f := newFixture(t, true, snap, tc.content)
			src := &datasource.Source{Ref: datasource.Ref{Group: datasource.SnapshotGroup, Kind: datasource.SnapshotKind, Namespace: "prod", Name: "nightly"}, Object: snap}
			if err := f.c.Protect(context.Background(), nil, src); err != nil {
				t.Fatal(err)
			}
			patches, _ := f.contentWrites(t)
			if !tc.wantHold {
				if len(patches) != 0 {
					t.Fatalf("content patched %v, want no write", patches)
				}
				return
			}
			if len(patches) != 1 {
				t.Fatalf("content patches %v, want one", patches)
			}
			got, err := f.snapClient.SnapshotV1().VolumeSnapshotContents().Get(context.Background(), "c1", metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if got.Spec.DeletionPolicy != snapshotv1.VolumeSnapshotContentRetain || got.Annotations[HeldPolicyAnnotation] != "Delete" {
				t.Errorf("content policy %s, annotations %v; want Retain with %s=Delete", got.Spec.DeletionPolicy, got.Annotations, HeldPolicyAnnotation)
			}
			if !slices.Contains(got.Finalizers, HeldContentFinalizer) {
				t.Errorf("content finalizers %v, want %s: a delete decided before the hold would drop it", got.Finalizers, HeldContentFinalizer)
			}
			// A second claim of the fan-out writes nothing more.
			if err := f.c.Protect(context.Background(), nil, src); err != nil {
				t.Fatal(err)
			}
			if p, _ := f.contentWrites(t); len(p) != 1 {
				t.Errorf("second Protect wrote again: %d patches", len(p))
			}
		})
	}
}

// TestHoldForbiddenWarnsOnce: under RBAC without patch on contents (upstream's
// rules) the restore goes on and one Warning names the rule.
func TestHoldForbiddenWarnsOnce(t *testing.T) {
	snap := boundSnapshot("prod", "nightly", "c1")
	f := newFixture(t, true, snap, content("c1", "prod", "nightly", snapshotv1.VolumeSnapshotContentDelete, nil))
	rec := record.NewFakeRecorder(10)
	f.c.cfg.Recorder = rec
	f.snapClient.PrependReactor("patch", "volumesnapshotcontents", func(clienttesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewForbidden(schema.GroupResource{Group: datasource.SnapshotGroup, Resource: "volumesnapshotcontents"}, "c1", errors.New("RBAC"))
	})
	src := &datasource.Source{Ref: datasource.Ref{Group: datasource.SnapshotGroup, Kind: datasource.SnapshotKind, Namespace: "prod", Name: "nightly"}, Object: snap}
	claim := user("dev", "copy", datasource.SnapshotKind, "prod", "nightly")
	for range 3 {
		f.c.mu.Lock()
		clear(f.c.protected)
		f.c.mu.Unlock()
		if err := f.c.Protect(context.Background(), claim, src); err != nil {
			t.Fatalf("Protect() = %v, want the restore to go on", err)
		}
	}
	if len(rec.Events) != 1 {
		t.Fatalf("%d Events, want exactly one", len(rec.Events))
	}
	if ev := <-rec.Events; !contains(ev, "SnapshotHoldForbidden") || !contains(ev, `verbs: ["patch", "delete"]`) {
		t.Errorf("Event %q does not name the rule to add", ev)
	}
}

// TestReleaseContent: when nothing uses the snapshot any more the policy is
// put back; when the snapshot was deleted meanwhile, the content is deleted
// here so the backend snapshot goes as its owner asked.
func TestReleaseContent(t *testing.T) {
	held := map[string]string{HeldPolicyAnnotation: "Delete"}
	deletingSnap := boundSnapshot("prod", "nightly", "c1", SnapshotFinalizer)
	deletingSnap.DeletionTimestamp = &metav1.Time{}
	tests := []struct {
		name       string
		objs       []runtime.Object
		wantPolicy string
		wantDelete bool
		wantNoop   bool
	}{
		{name: "snapshot still there: policy back, content kept",
			objs:       []runtime.Object{boundSnapshot("prod", "nightly", "c1", SnapshotFinalizer), content("c1", "prod", "nightly", "Retain", held)},
			wantPolicy: "Delete"},
		{name: "snapshot being deleted: policy back, content deleted",
			objs:       []runtime.Object{deletingSnap, content("c1", "prod", "nightly", "Retain", held)},
			wantPolicy: "Delete", wantDelete: true},
		{name: "snapshot gone (sidecar restarted after it went): content deleted",
			objs:       []runtime.Object{content("c1", "prod", "nightly", "Retain", held)},
			wantPolicy: "Delete", wantDelete: true},
		{name: "a restore is still pending: nothing released",
			objs: []runtime.Object{deletingSnap, content("c1", "prod", "nightly", "Retain", held),
				user("dev", "copy", datasource.SnapshotKind, "prod", "nightly")},
			wantNoop: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, true, tc.objs...)
			if err := f.c.sync(context.Background(), "VolumeSnapshot/prod/nightly"); err != nil {
				t.Fatal(err)
			}
			patches, deletes := f.contentWrites(t)
			if tc.wantNoop {
				if len(patches)+len(deletes) != 0 {
					t.Fatalf("content written (%v, %v) while a restore is pending", patches, deletes)
				}
				return
			}
			if len(patches) != 1 {
				t.Fatalf("content patches %v, want one", patches)
			}
			spec, _ := patches[0]["spec"].(map[string]any)
			if spec["deletionPolicy"] != tc.wantPolicy {
				t.Errorf("patched policy %v, want %s", spec["deletionPolicy"], tc.wantPolicy)
			}
			if got := len(deletes) == 1; got != tc.wantDelete {
				t.Errorf("content deleted = %v, want %v", got, tc.wantDelete)
			}
			if tc.wantDelete {
				anns := patches[0]["metadata"].(map[string]any)["annotations"].(map[string]any)
				if anns[beingDeletedAnnotation] != "yes" {
					t.Errorf("deleted content lacks %s, csi-snapshotter would keep the backend snapshot", beingDeletedAnnotation)
				}
			}
		})
	}
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }

// TestNoReleaseFromUnsyncedSnapshotCache: a held content seen before the
// snapshot cache is full must not be taken for one whose snapshot is gone.
func TestNoReleaseFromUnsyncedSnapshotCache(t *testing.T) {
	f := newFixture(t, true, boundSnapshot("prod", "nightly", "c1", SnapshotFinalizer),
		content("c1", "prod", "nightly", "Retain", map[string]string{HeldPolicyAnnotation: "Delete"}))
	f.c.snapshots.Load().synced = []cache.InformerSynced{func() bool { return false }}
	if err := f.c.sync(context.Background(), "VolumeSnapshot/prod/nightly"); err == nil {
		t.Fatal("sync() decided with an unsynced snapshot cache")
	}
	if p, d := f.contentWrites(t); len(p)+len(d) != 0 {
		t.Fatalf("content written (%v, %v) from an unsynced cache", p, d)
	}
}

// TestProtectSnapshotBeingDeleted: a snapshot whose delete was requested
// before the sidecar protected it cannot get a finalizer any more (the API
// refuses new finalizers on an object being deleted); the resolver lets only
// a restore the stock snapshot-controller holds it for through, and Protect
// then holds its content without writing the snapshot.
func TestProtectSnapshotBeingDeleted(t *testing.T) {
	snap := boundSnapshot("prod", "nightly", "c1", datasource.SnapshotControllerSourceFinalizer)
	now := metav1.Now()
	snap.DeletionTimestamp = &now
	f := newFixture(t, true, snap, content("c1", "prod", "nightly", snapshotv1.VolumeSnapshotContentDelete, nil))
	src := &datasource.Source{Ref: datasource.Ref{Group: datasource.SnapshotGroup, Kind: datasource.SnapshotKind, Namespace: "prod", Name: "nightly"}, Object: snap}
	if err := f.c.Protect(context.Background(), nil, src); err != nil {
		t.Fatal(err)
	}
	for _, a := range f.snapClient.Actions() {
		if a.GetResource().Resource == "volumesnapshots" && a.GetVerb() != "get" && a.GetVerb() != "list" && a.GetVerb() != "watch" {
			t.Errorf("the snapshot being deleted was written: %s", a.GetVerb())
		}
	}
	if patches, _ := f.contentWrites(t); len(patches) != 1 {
		t.Errorf("content patches %v, want the hold", patches)
	}
}

// TestReleaseContentSurvivesStopBetweenWrites: releasing the content of a
// deleted snapshot takes a patch, then a delete. When the delete does not
// happen (the soak's long run: the leader exited on a driver restart between
// the two), the content must still be known as held, so the next attempt —
// or the next leader — deletes it; before, the patch had removed the hold
// annotation and the content and its backend snapshot stayed for ever.
func TestReleaseContentSurvivesStopBetweenWrites(t *testing.T) {
	f := newFixture(t, true, content("c1", "prod", "nightly", "Retain", map[string]string{HeldPolicyAnnotation: "Delete"}))
	failDelete := true
	f.snapClient.PrependReactor("delete", "volumesnapshotcontents", func(clienttesting.Action) (bool, runtime.Object, error) {
		if failDelete {
			return true, nil, errors.New("connection refused")
		}
		return false, nil, nil
	})
	ctx := context.Background()
	if err := f.c.sync(ctx, "VolumeSnapshot/prod/nightly"); err == nil {
		t.Fatal("sync succeeded although the content could not be deleted; want an error, so it is retried")
	}
	got, err := f.snapClient.SnapshotV1().VolumeSnapshotContents().Get(ctx, "c1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got.Annotations[HeldPolicyAnnotation] != "Delete" || got.Annotations[beingDeletedAnnotation] != "yes" || got.Spec.DeletionPolicy != "Delete" {
		t.Fatalf("after the patch: annotations %v, policy %s; want still held, marked being deleted, policy Delete", got.Annotations, got.Spec.DeletionPolicy)
	}
	// A new leader starts from the stored content.
	if err := f.c.snapshots.Load().contentIndex.Update(got); err != nil {
		t.Fatal(err)
	}
	if held := f.c.heldContents("prod", "nightly"); len(held) != 1 {
		t.Fatalf("held contents %d after the stop, want 1 (nothing else would ever delete it)", len(held))
	}
	failDelete = false
	if err := f.c.sync(ctx, "VolumeSnapshot/prod/nightly"); err != nil {
		t.Fatal(err)
	}
	if _, err := f.snapClient.SnapshotV1().VolumeSnapshotContents().Get(ctx, "c1", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("content after the second release: %v, want it deleted", err)
	}
}

// TestContentDeletedWhileHeldKeepsItsBackendSnapshot: the snapshot-controller
// deleted a content from its cache's view just as a restore held it (the
// long soak: a cross-namespace restore starting while the snapshot was being
// deleted). csi-snapshotter, seeing Retain, let go of it; the sidecar's
// finalizer keeps the content, and the release puts Delete back with the mark
// csi-snapshotter reads, and lets the content go only once csi-snapshotter
// has deleted the backend snapshot (status.snapshotHandle cleared). Before,
// the content went at once and the backend snapshot stayed for ever.
func TestContentDeletedWhileHeldKeepsItsBackendSnapshot(t *testing.T) {
	held := content("c1", "prod", "nightly", "Retain", map[string]string{HeldPolicyAnnotation: "Delete"})
	held.Finalizers = []string{HeldContentFinalizer}
	held.DeletionTimestamp = &metav1.Time{}
	held.Status = &snapshotv1.VolumeSnapshotContentStatus{SnapshotHandle: ptr.To("backend-snap-1")}
	f := newFixture(t, true, held)
	ctx := context.Background()
	if err := f.c.sync(ctx, "VolumeSnapshot/prod/nightly"); err != nil {
		t.Fatal(err)
	}
	patches, deletes := f.contentWrites(t)
	if len(patches) != 1 || len(deletes) != 0 {
		t.Fatalf("patches %v, deletes %v; want one patch (the policy back, marked), no delete", patches, deletes)
	}
	meta := patches[0]["metadata"].(map[string]any)
	if patches[0]["spec"].(map[string]any)["deletionPolicy"] != "Delete" || meta["annotations"].(map[string]any)[beingDeletedAnnotation] != "yes" {
		t.Errorf("patch %v: want deletionPolicy Delete and %s=yes, so csi-snapshotter deletes the backend snapshot", patches[0], beingDeletedAnnotation)
	}
	if fins, _ := meta["finalizers"].([]any); !slices.Contains(fins, any(HeldContentFinalizer)) {
		t.Errorf("patch finalizers %v: the content must stay until the backend snapshot is gone", meta["finalizers"])
	}

	// The content as written; csi-snapshotter has not deleted the backend
	// snapshot yet: nothing more.
	got, err := f.snapClient.SnapshotV1().VolumeSnapshotContents().Get(ctx, "c1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got.DeletionTimestamp = held.DeletionTimestamp // the fake tracker does not keep it
	index := f.c.snapshots.Load().contentIndex
	if err := index.Update(got); err != nil {
		t.Fatal(err)
	}
	if err := f.c.sync(ctx, "VolumeSnapshot/prod/nightly"); err != nil {
		t.Fatal(err)
	}
	if p, _ := f.contentWrites(t); len(p) != 1 {
		t.Fatalf("%d patches while csi-snapshotter still deletes the backend snapshot, want none more", len(p)-1)
	}

	// csi-snapshotter deleted it and cleared the handle: the hold ends.
	got = got.DeepCopy()
	got.Status.SnapshotHandle = nil
	if err := index.Update(got); err != nil {
		t.Fatal(err)
	}
	if err := f.c.sync(ctx, "VolumeSnapshot/prod/nightly"); err != nil {
		t.Fatal(err)
	}
	patches, _ = f.contentWrites(t)
	if len(patches) != 2 {
		t.Fatalf("patches %v, want the hold removed", patches)
	}
	if fins, _ := patches[1]["metadata"].(map[string]any)["finalizers"].([]any); slices.Contains(fins, any(HeldContentFinalizer)) {
		t.Errorf("finalizers %v after the backend snapshot went, want %s removed", fins, HeldContentFinalizer)
	}
}
