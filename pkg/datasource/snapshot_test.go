package datasource

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	snapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/crossns/external-provisioner/pkg/snapshotapi"
)

// TestResolveSnapshot restores dev/copy from VolumeSnapshot dev/nightly, in
// the claim's own namespace: no gate and no grant are needed.
func TestResolveSnapshot(t *testing.T) {
	snap := func(mods ...func(*snapshotv1.VolumeSnapshot)) *snapshotv1.VolumeSnapshot {
		return readySnapshot("dev", "nightly", mods...)
	}
	content := func(mods ...func(*snapshotv1.VolumeSnapshotContent)) *snapshotv1.VolumeSnapshotContent {
		return contentOf(snap(), mods...)
	}
	fromBlock := func(c *snapshotv1.VolumeSnapshotContent) { c.Spec.SourceVolumeMode = ptr.To(v1.PersistentVolumeBlock) }
	allowModeChange := func(value string) func(*snapshotv1.VolumeSnapshotContent) {
		return func(c *snapshotv1.VolumeSnapshotContent) {
			c.Annotations = map[string]string{AllowVolumeModeChangeAnnotation: value}
		}
	}
	fs := Request{Bytes: gi, Mode: v1.PersistentVolumeFilesystem}
	block := Request{Bytes: gi, Mode: v1.PersistentVolumeBlock}
	boom := errors.New("cache broken")

	tests := []struct {
		name string
		// snapshot and content are the cached objects; nil means not cached.
		snapshot              *snapshotv1.VolumeSnapshot
		content               *snapshotv1.VolumeSnapshotContent
		preventModeConversion bool
		req                   Request
		fail                  map[string]error
		// snapshotAPI is the error asking for the snapshot caches returns.
		snapshotAPI error
		// wantReason is the *Error reason of an invalid source; empty for success.
		wantReason  string
		wantMessage string
		// wantTransient: a non-*Error wrapping the cache error.
		wantTransient bool
	}{
		{
			name:     "ready snapshot restores from its content's handle",
			snapshot: snap(), content: content(), req: fs,
		},
		{
			name:       "snapshot not found",
			content:    content(),
			req:        fs,
			wantReason: reasonSourceNotFound, wantMessage: "VolumeSnapshot dev/nightly not found",
		},
		{
			name:     "snapshot cache error is transient",
			snapshot: snap(), content: content(), req: fs,
			fail:          map[string]error{"VolumeSnapshot": boom},
			wantTransient: true,
		},
		{
			name:     "snapshot API not served: the admin is told to install the CRDs, nothing is read",
			snapshot: snap(), content: content(), req: fs,
			snapshotAPI: fmt.Errorf("%w: install the snapshot CRDs", snapshotapi.ErrNotServed),
			wantReason:  reasonSnapshotAPINotServed,
			wantMessage: "cannot restore VolumeSnapshot dev/nightly: the VolumeSnapshot API (snapshot.storage.k8s.io/v1) is not served: install the snapshot CRDs",
		},
		{
			name:     "snapshot caches still syncing is transient",
			snapshot: snap(), content: content(), req: fs,
			snapshotAPI:   fmt.Errorf("%w: %w", snapshotapi.ErrNotSynced, boom),
			wantTransient: true,
		},
		{
			name:       "snapshot being deleted",
			snapshot:   snap(func(s *snapshotv1.VolumeSnapshot) { s.DeletionTimestamp = &metav1.Time{} }),
			content:    content(),
			req:        fs,
			wantReason: reasonSourceBeingDeleted, wantMessage: "is being deleted",
		},
		{
			name:       "snapshot without status is not bound",
			snapshot:   snap(func(s *snapshotv1.VolumeSnapshot) { s.Status = nil }),
			req:        fs,
			wantReason: reasonSourceNotReady, wantMessage: "not bound to a VolumeSnapshotContent",
		},
		{
			name:       "snapshot with empty content name is not bound",
			snapshot:   snap(func(s *snapshotv1.VolumeSnapshot) { s.Status.BoundVolumeSnapshotContentName = ptr.To("") }),
			req:        fs,
			wantReason: reasonSourceNotReady, wantMessage: "not bound to a VolumeSnapshotContent",
		},
		{
			name:       "snapshot without readyToUse is not ready",
			snapshot:   snap(func(s *snapshotv1.VolumeSnapshot) { s.Status.ReadyToUse = nil }),
			content:    content(),
			req:        fs,
			wantReason: reasonSourceNotReady, wantMessage: "not ready to use",
		},
		{
			name:       "snapshot with readyToUse false is not ready",
			snapshot:   snap(func(s *snapshotv1.VolumeSnapshot) { s.Status.ReadyToUse = ptr.To(false) }),
			content:    content(),
			req:        fs,
			wantReason: reasonSourceNotReady, wantMessage: "not ready to use",
		},
		{
			name:       "bound content missing",
			snapshot:   snap(),
			req:        fs,
			wantReason: reasonSourceNotReady, wantMessage: `VolumeSnapshotContent "content-nightly" of VolumeSnapshot dev/nightly not found`,
		},
		{
			name:     "content cache error is transient",
			snapshot: snap(), content: content(), req: fs,
			fail:          map[string]error{"VolumeSnapshotContent": boom},
			wantTransient: true,
		},
		{
			name:     "content points back at a snapshot in another namespace",
			snapshot: snap(),
			content: content(func(c *snapshotv1.VolumeSnapshotContent) {
				c.Spec.VolumeSnapshotRef.Namespace = "prod"
			}),
			req:        fs,
			wantReason: reasonContentNotBoundBack, wantMessage: `VolumeSnapshotContent "content-nightly" is not bound to VolumeSnapshot dev/nightly`,
		},
		{
			name:     "content points back at another snapshot name",
			snapshot: snap(),
			content: content(func(c *snapshotv1.VolumeSnapshotContent) {
				c.Spec.VolumeSnapshotRef.Name = "weekly"
			}),
			req:        fs,
			wantReason: reasonContentNotBoundBack,
		},
		{
			name:     "content points back at an earlier snapshot of the same name",
			snapshot: snap(),
			content: content(func(c *snapshotv1.VolumeSnapshotContent) {
				c.Spec.VolumeSnapshotRef.UID = "uid-of-a-deleted-snapshot"
			}),
			req:        fs,
			wantReason: reasonContentNotBoundBack,
		},
		{
			name:     "content pointing back without a UID (pre-provisioned) is accepted",
			snapshot: snap(),
			content: content(func(c *snapshotv1.VolumeSnapshotContent) {
				c.Spec.VolumeSnapshotRef.UID = ""
			}),
			req: fs,
		},
		{
			name:       "snapshot of another driver",
			snapshot:   snap(),
			content:    content(func(c *snapshotv1.VolumeSnapshotContent) { c.Spec.Driver = "other.csi.example.com" }),
			req:        fs,
			wantReason: reasonDriverMismatch, wantMessage: `taken by driver "other.csi.example.com", not "hostpath.csi.k8s.io"`,
		},
		{
			name:       "content without status has no handle",
			snapshot:   snap(),
			content:    content(func(c *snapshotv1.VolumeSnapshotContent) { c.Status = nil }),
			req:        fs,
			wantReason: reasonSourceNotReady, wantMessage: "has no snapshot handle yet",
		},
		{
			name:       "content with empty handle",
			snapshot:   snap(),
			content:    content(func(c *snapshotv1.VolumeSnapshotContent) { c.Status.SnapshotHandle = ptr.To("") }),
			req:        fs,
			wantReason: reasonSourceNotReady, wantMessage: "has no snapshot handle yet",
		},
		{
			name:       "restore size larger than the claim",
			snapshot:   snap(func(s *snapshotv1.VolumeSnapshot) { s.Status.RestoreSize = ptr.To(resource.MustParse("2Gi")) }),
			content:    content(),
			req:        fs,
			wantReason: reasonSourceTooLarge, wantMessage: "requested size 1Gi is smaller than the restore size 2Gi of VolumeSnapshot dev/nightly; ask for at least 2Gi",
		},
		{
			name:     "claim larger than the restore size",
			snapshot: snap(), content: content(),
			req: Request{Bytes: 2 * gi, Mode: v1.PersistentVolumeFilesystem},
		},
		{
			name:     "unknown restore size is not checked",
			snapshot: snap(func(s *snapshotv1.VolumeSnapshot) { s.Status.RestoreSize = nil }),
			content:  content(),
			req:      Request{Bytes: 1, Mode: v1.PersistentVolumeFilesystem},
		},
		{
			name:     "mode change allowed when the conversion guard is off",
			snapshot: snap(), content: content(),
			req: block,
		},
		{
			name:     "mode change refused when the conversion guard is on",
			snapshot: snap(), content: content(),
			preventModeConversion: true,
			req:                   block,
			wantReason:            reasonVolumeModeMismatch,
			wantMessage:           "was taken from a Filesystem volume and the claim asks for Block; an admin may allow it with annotation " + AllowVolumeModeChangeAnnotation + `=true on VolumeSnapshotContent "content-nightly"`,
		},
		{
			name:     "Block snapshot refused as Filesystem when the guard is on",
			snapshot: snap(), content: content(fromBlock),
			preventModeConversion: true,
			req:                   fs,
			wantReason:            reasonVolumeModeMismatch,
		},
		{
			name:     "mode change allowed by the admin's annotation",
			snapshot: snap(), content: content(allowModeChange("true")),
			preventModeConversion: true,
			req:                   block,
		},
		{
			name:     "annotation set to false does not allow a mode change",
			snapshot: snap(), content: content(allowModeChange("false")),
			preventModeConversion: true,
			req:                   block,
			wantReason:            reasonVolumeModeMismatch,
		},
		{
			name:     "same mode with the guard on",
			snapshot: snap(), content: content(fromBlock),
			preventModeConversion: true,
			req:                   block,
		},
		{
			name:                  "content without source mode is not checked",
			snapshot:              snap(),
			content:               content(func(c *snapshotv1.VolumeSnapshotContent) { c.Spec.SourceVolumeMode = nil }),
			preventModeConversion: true,
			req:                   block,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := world{fail: tc.fail, snapshotAPI: tc.snapshotAPI}
			if tc.snapshot != nil {
				w.snapshots = append(w.snapshots, tc.snapshot)
			}
			if tc.content != nil {
				w.contents = append(w.contents, tc.content)
			}
			r, log := newResolver(t, w)
			r.PreventVolumeModeConversion = tc.preventModeConversion
			claim := pendingClaim("dev", "copy", SnapshotKind, "", "nightly")

			src, err := r.Resolve(claim, tc.req)

			switch {
			case tc.wantTransient:
				if _, ok := AsError(err); ok || err == nil || !errors.Is(err, boom) {
					t.Fatalf("Resolve() error = %v, want a transient error wrapping %v", err, boom)
				}
			case tc.wantReason != "":
				e := wantFailure(t, err, Invalid, tc.wantReason)
				if !strings.Contains(e.Message, tc.wantMessage) {
					t.Errorf("message = %q, want it to contain %q", e.Message, tc.wantMessage)
				}
				if e.DenialReason != "" {
					t.Errorf("DenialReason = %q for an invalid source, want empty", e.DenialReason)
				}
				if tc.snapshotAPI != nil && len(log.reads()) > 0 {
					t.Errorf("Resolve() read %v without snapshot caches", log.reads())
				}
			default:
				if err != nil {
					t.Fatalf("Resolve() error = %v", err)
				}
				if got := src.Content.GetSnapshot().GetSnapshotId(); got != "handle-nightly" {
					t.Errorf("content source snapshot id = %q, want %q", got, "handle-nightly")
				}
				if src.Content.GetVolume() != nil {
					t.Errorf("content source = %v, want a snapshot source only", src.Content)
				}
				if src.CrossNamespace || src.Grant != "" {
					t.Errorf("CrossNamespace, Grant = %v, %q; want false, empty", src.CrossNamespace, src.Grant)
				}
				if obj, ok := src.Object.(*snapshotv1.VolumeSnapshot); !ok || obj.Name != "nightly" {
					t.Errorf("Object = %#v, want the VolumeSnapshot", src.Object)
				}
				want := Ref{Group: SnapshotGroup, Kind: SnapshotKind, Namespace: "dev", Name: "nightly"}
				if src.Ref != want {
					t.Errorf("Ref = %+v, want %+v", src.Ref, want)
				}
			}
		})
	}
}

// TestResolveIgnores checks that claims without a source this sidecar handles
// resolve to nothing and read nothing.
func TestResolveIgnores(t *testing.T) {
	tests := []struct {
		name  string
		claim *v1.PersistentVolumeClaim
	}{
		{
			name:  "no data source",
			claim: &v1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Namespace: "dev", Name: "empty"}},
		},
		{
			name: "volume populator in the claim's namespace",
			claim: &v1.PersistentVolumeClaim{
				ObjectMeta: metav1.ObjectMeta{Namespace: "dev", Name: "hello"},
				Spec: v1.PersistentVolumeClaimSpec{DataSourceRef: &v1.TypedObjectReference{
					APIGroup: ptr.To("hello.example.com"), Kind: "Hello", Name: "h",
				}},
			},
		},
		{
			name: "volume populator in another namespace, with the gate off",
			claim: &v1.PersistentVolumeClaim{
				ObjectMeta: metav1.ObjectMeta{Namespace: "dev", Name: "hello"},
				Spec: v1.PersistentVolumeClaimSpec{DataSourceRef: &v1.TypedObjectReference{
					APIGroup: ptr.To("hello.example.com"), Kind: "Hello", Name: "h", Namespace: ptr.To("prod"),
				}},
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, log := newResolver(t, world{})
			src, err := r.Resolve(tc.claim, Request{Bytes: gi, Mode: v1.PersistentVolumeFilesystem})
			if src != nil || err != nil {
				t.Errorf("Resolve() = %+v, %v; want nil, nil", src, err)
			}
			if got := log.reads(); len(got) > 0 {
				t.Errorf("Resolve() read %v, want no reads", got)
			}
		})
	}
}
