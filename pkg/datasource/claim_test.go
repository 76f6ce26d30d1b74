package datasource

import (
	"errors"
	"strings"
	"testing"

	snapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

// TestResolveClaim clones dev/copy from PersistentVolumeClaim dev/db, in the
// claim's own namespace: no gate and no grant are needed.
func TestResolveClaim(t *testing.T) {
	source := func(mods ...func(*v1.PersistentVolumeClaim)) *v1.PersistentVolumeClaim {
		return boundClaim("dev", "db", mods...)
	}
	volume := func(mods ...func(*v1.PersistentVolume)) *v1.PersistentVolume {
		return volumeOf(source(), mods...)
	}
	mode := func(m v1.PersistentVolumeMode) func(*v1.PersistentVolumeClaim) {
		return func(c *v1.PersistentVolumeClaim) { c.Spec.VolumeMode = &m }
	}
	fs := Request{Bytes: gi, Mode: v1.PersistentVolumeFilesystem}
	block := Request{Bytes: gi, Mode: v1.PersistentVolumeBlock}
	boom := errors.New("cache broken")

	tests := []struct {
		name string
		// claimName is the name of the claim being provisioned ("copy" when empty).
		claimName string
		// source and volume are the cached objects; nil means not cached.
		source *v1.PersistentVolumeClaim
		volume *v1.PersistentVolume
		req    Request
		fail   map[string]error
		// wantReason is the *Error reason of an invalid source; empty for success.
		wantReason  string
		wantMessage string
		// wantTransient: a non-*Error wrapping the cache error.
		wantTransient bool
	}{
		{
			name:   "bound source claim clones its volume",
			source: source(), volume: volume(), req: fs,
		},
		{
			name:       "a claim cannot clone itself",
			claimName:  "db",
			source:     source(),
			volume:     volume(),
			req:        fs,
			wantReason: reasonSourceNotFound, wantMessage: "cannot be cloned from itself",
		},
		{
			name:       "source claim not found",
			req:        fs,
			wantReason: reasonSourceNotFound, wantMessage: "PersistentVolumeClaim dev/db not found",
		},
		{
			name:   "source claim cache error is transient",
			source: source(), volume: volume(), req: fs,
			fail:          map[string]error{"PersistentVolumeClaim": boom},
			wantTransient: true,
		},
		{
			name:       "source claim being deleted",
			source:     source(func(c *v1.PersistentVolumeClaim) { c.DeletionTimestamp = &metav1.Time{} }),
			volume:     volume(),
			req:        fs,
			wantReason: reasonSourceBeingDeleted, wantMessage: "PersistentVolumeClaim dev/db is being deleted",
		},
		{
			name:       "source claim still pending",
			source:     source(func(c *v1.PersistentVolumeClaim) { c.Status.Phase = v1.ClaimPending }),
			volume:     volume(),
			req:        fs,
			wantReason: reasonSourceNotReady, wantMessage: "is not bound yet",
		},
		{
			name:       "source claim bound without a volume name",
			source:     source(func(c *v1.PersistentVolumeClaim) { c.Spec.VolumeName = "" }),
			req:        fs,
			wantReason: reasonSourceNotReady, wantMessage: "is not bound yet",
		},
		{
			name:       "source volume missing",
			source:     source(),
			req:        fs,
			wantReason: reasonSourceNotReady, wantMessage: `PersistentVolume "pv-dev-db" of PersistentVolumeClaim dev/db not found`,
		},
		{
			name:   "source volume cache error is transient",
			source: source(), volume: volume(), req: fs,
			fail:          map[string]error{"PersistentVolume": boom},
			wantTransient: true,
		},
		{
			name:       "source volume bound to no claim",
			source:     source(),
			volume:     volume(func(pv *v1.PersistentVolume) { pv.Spec.ClaimRef = nil }),
			req:        fs,
			wantReason: reasonContentNotBoundBack, wantMessage: `PersistentVolume "pv-dev-db" is not bound to PersistentVolumeClaim dev/db`,
		},
		{
			name:       "source volume bound to a claim in another namespace",
			source:     source(),
			volume:     volume(func(pv *v1.PersistentVolume) { pv.Spec.ClaimRef.Namespace = "prod" }),
			req:        fs,
			wantReason: reasonContentNotBoundBack,
		},
		{
			name:       "source volume bound to another claim",
			source:     source(),
			volume:     volume(func(pv *v1.PersistentVolume) { pv.Spec.ClaimRef.Name = "other" }),
			req:        fs,
			wantReason: reasonContentNotBoundBack,
		},
		{
			name:       "source volume bound to an earlier claim of the same name",
			source:     source(),
			volume:     volume(func(pv *v1.PersistentVolume) { pv.Spec.ClaimRef.UID = "uid-of-a-deleted-claim" }),
			req:        fs,
			wantReason: reasonContentNotBoundBack,
		},
		{
			name:   "source volume is not a CSI volume",
			source: source(),
			volume: volume(func(pv *v1.PersistentVolume) {
				pv.Spec.PersistentVolumeSource = v1.PersistentVolumeSource{HostPath: &v1.HostPathVolumeSource{Path: "/tmp"}}
			}),
			req:        fs,
			wantReason: reasonDriverMismatch, wantMessage: `is not a volume of driver "hostpath.csi.k8s.io"`,
		},
		{
			name:       "source volume of another driver",
			source:     source(),
			volume:     volume(func(pv *v1.PersistentVolume) { pv.Spec.CSI.Driver = "other.csi.example.com" }),
			req:        fs,
			wantReason: reasonDriverMismatch,
		},
		{
			name: "source claim larger than the clone",
			source: source(func(c *v1.PersistentVolumeClaim) {
				c.Spec.Resources.Requests[v1.ResourceStorage] = resource.MustParse("2Gi")
			}),
			volume:     volume(),
			req:        fs,
			wantReason: reasonSourceTooLarge, wantMessage: "requested size 1Gi is smaller than the size 2Gi of PersistentVolumeClaim dev/db; ask for at least 2Gi",
		},
		{
			name:   "clone larger than the source claim",
			source: source(), volume: volume(),
			req: Request{Bytes: 3 * gi, Mode: v1.PersistentVolumeFilesystem},
		},
		{
			name:   "source claim without a size request is not checked",
			source: source(func(c *v1.PersistentVolumeClaim) { c.Spec.Resources.Requests = nil }),
			volume: volume(),
			req:    Request{Bytes: 1, Mode: v1.PersistentVolumeFilesystem},
		},
		{
			name:   "unset source mode is Filesystem",
			source: source(), volume: volume(), req: fs,
		},
		{
			name:       "unset source mode is not Block",
			source:     source(),
			volume:     volume(),
			req:        block,
			wantReason: reasonVolumeModeMismatch, wantMessage: "is a Filesystem volume and the claim asks for Block",
		},
		{
			name:   "Block source clones to Block",
			source: source(mode(v1.PersistentVolumeBlock)), volume: volume(), req: block,
		},
		{
			name:       "Block source does not clone to Filesystem",
			source:     source(mode(v1.PersistentVolumeBlock)),
			volume:     volume(),
			req:        fs,
			wantReason: reasonVolumeModeMismatch, wantMessage: "is a Block volume and the claim asks for Filesystem",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := world{fail: tc.fail}
			if tc.source != nil {
				w.claims = append(w.claims, tc.source)
			}
			if tc.volume != nil {
				w.volumes = append(w.volumes, tc.volume)
			}
			r, _ := newResolver(t, w)
			name := tc.claimName
			if name == "" {
				name = "copy"
			}
			claim := pendingClaim("dev", name, ClaimKind, "", "db")

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
			default:
				if err != nil {
					t.Fatalf("Resolve() error = %v", err)
				}
				if got := src.Content.GetVolume().GetVolumeId(); got != "vol-dev-db" {
					t.Errorf("content source volume id = %q, want %q", got, "vol-dev-db")
				}
				if src.Content.GetSnapshot() != nil {
					t.Errorf("content source = %v, want a volume source only", src.Content)
				}
				if obj, ok := src.Object.(*v1.PersistentVolumeClaim); !ok || obj.Name != "db" {
					t.Errorf("Object = %#v, want the source claim", src.Object)
				}
				if src.CrossNamespace || src.Grant != "" {
					t.Errorf("CrossNamespace, Grant = %v, %q; want false, empty", src.CrossNamespace, src.Grant)
				}
			}
		})
	}
}

// TestResolveLegacyDataSource checks that the legacy dataSource field
// resolves like dataSourceRef.
func TestResolveLegacyDataSource(t *testing.T) {
	snap := readySnapshot("dev", "nightly")
	db := boundClaim("dev", "db")
	tests := []struct {
		name       string
		dataSource v1.TypedLocalObjectReference
		wantSnap   string
		wantVolume string
	}{
		{
			name:       "snapshot",
			dataSource: v1.TypedLocalObjectReference{APIGroup: ptr.To(SnapshotGroup), Kind: SnapshotKind, Name: "nightly"},
			wantSnap:   "handle-nightly",
		},
		{
			name:       "claim",
			dataSource: v1.TypedLocalObjectReference{Kind: ClaimKind, Name: "db"},
			wantVolume: "vol-dev-db",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, _ := newResolver(t, world{
				snapshots: []*snapshotv1.VolumeSnapshot{snap},
				contents:  []*snapshotv1.VolumeSnapshotContent{contentOf(snap)},
				claims:    []*v1.PersistentVolumeClaim{db},
				volumes:   []*v1.PersistentVolume{volumeOf(db)},
			})
			claim := &v1.PersistentVolumeClaim{
				ObjectMeta: metav1.ObjectMeta{Namespace: "dev", Name: "copy"},
				Spec:       v1.PersistentVolumeClaimSpec{DataSource: &tc.dataSource},
			}
			src, err := r.Resolve(claim, Request{Bytes: gi, Mode: v1.PersistentVolumeFilesystem})
			if err != nil {
				t.Fatalf("Resolve() error = %v", err)
			}
			if got := src.Content.GetSnapshot().GetSnapshotId(); got != tc.wantSnap {
				t.Errorf("snapshot id = %q, want %q", got, tc.wantSnap)
			}
			if got := src.Content.GetVolume().GetVolumeId(); got != tc.wantVolume {
				t.Errorf("volume id = %q, want %q", got, tc.wantVolume)
			}
		})
	}
}
