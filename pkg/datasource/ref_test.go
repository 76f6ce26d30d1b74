package datasource

import (
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

func TestRefOf(t *testing.T) {
	tests := []struct {
		name          string
		dataSource    *v1.TypedLocalObjectReference
		dataSourceRef *v1.TypedObjectReference
		want          Ref
		wantOK        bool
	}{
		{
			name: "no data source",
		},
		{
			name:       "legacy dataSource, core group as nil",
			dataSource: &v1.TypedLocalObjectReference{Kind: ClaimKind, Name: "db"},
			want:       Ref{Kind: ClaimKind, Namespace: "dev", Name: "db"},
			wantOK:     true,
		},
		{
			name:       "legacy dataSource with group",
			dataSource: &v1.TypedLocalObjectReference{APIGroup: ptr.To(SnapshotGroup), Kind: SnapshotKind, Name: "nightly"},
			want:       Ref{Group: SnapshotGroup, Kind: SnapshotKind, Namespace: "dev", Name: "nightly"},
			wantOK:     true,
		},
		{
			name:          "dataSourceRef without namespace is in the claim's namespace",
			dataSourceRef: &v1.TypedObjectReference{APIGroup: ptr.To(SnapshotGroup), Kind: SnapshotKind, Name: "nightly"},
			want:          Ref{Group: SnapshotGroup, Kind: SnapshotKind, Namespace: "dev", Name: "nightly"},
			wantOK:        true,
		},
		{
			name:          "dataSourceRef with empty namespace is in the claim's namespace",
			dataSourceRef: &v1.TypedObjectReference{Kind: ClaimKind, Name: "db", Namespace: ptr.To("")},
			want:          Ref{Kind: ClaimKind, Namespace: "dev", Name: "db"},
			wantOK:        true,
		},
		{
			name:          "dataSourceRef names another namespace",
			dataSourceRef: &v1.TypedObjectReference{APIGroup: ptr.To(SnapshotGroup), Kind: SnapshotKind, Name: "nightly", Namespace: ptr.To("prod")},
			want:          Ref{Group: SnapshotGroup, Kind: SnapshotKind, Namespace: "prod", Name: "nightly"},
			wantOK:        true,
		},
		{
			name:          "dataSourceRef with nil group is the core group",
			dataSourceRef: &v1.TypedObjectReference{Kind: ClaimKind, Name: "db", Namespace: ptr.To("prod")},
			want:          Ref{Kind: ClaimKind, Namespace: "prod", Name: "db"},
			wantOK:        true,
		},
		{
			name:          "dataSourceRef wins over dataSource",
			dataSource:    &v1.TypedLocalObjectReference{Kind: ClaimKind, Name: "local"},
			dataSourceRef: &v1.TypedObjectReference{APIGroup: ptr.To(SnapshotGroup), Kind: SnapshotKind, Name: "nightly", Namespace: ptr.To("prod")},
			want:          Ref{Group: SnapshotGroup, Kind: SnapshotKind, Namespace: "prod", Name: "nightly"},
			wantOK:        true,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			claim := &v1.PersistentVolumeClaim{
				ObjectMeta: metav1.ObjectMeta{Namespace: "dev", Name: "copy"},
				Spec:       v1.PersistentVolumeClaimSpec{DataSource: tc.dataSource, DataSourceRef: tc.dataSourceRef},
			}
			got, ok := RefOf(claim)
			if ok != tc.wantOK || got != tc.want {
				t.Errorf("RefOf() = %+v, %v; want %+v, %v", got, ok, tc.want, tc.wantOK)
			}
		})
	}
}

func TestRefHandledAndCrossNamespace(t *testing.T) {
	claim := &v1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Namespace: "dev", Name: "copy"}}
	tests := []struct {
		name          string
		ref           Ref
		wantSnapshot  bool
		wantClaim     bool
		wantHandled   bool
		wantCrossNS   bool
		wantAsWritten string
	}{
		{
			name:         "snapshot in the claim's namespace",
			ref:          Ref{Group: SnapshotGroup, Kind: SnapshotKind, Namespace: "dev", Name: "nightly"},
			wantSnapshot: true, wantHandled: true,
			wantAsWritten: "VolumeSnapshot dev/nightly",
		},
		{
			name:         "snapshot in another namespace",
			ref:          Ref{Group: SnapshotGroup, Kind: SnapshotKind, Namespace: "prod", Name: "nightly"},
			wantSnapshot: true, wantHandled: true, wantCrossNS: true,
			wantAsWritten: "VolumeSnapshot prod/nightly",
		},
		{
			name:      "claim in another namespace",
			ref:       Ref{Kind: ClaimKind, Namespace: "prod", Name: "db"},
			wantClaim: true, wantHandled: true, wantCrossNS: true,
			wantAsWritten: "PersistentVolumeClaim prod/db",
		},
		{
			name:          "VolumeSnapshot kind without its group belongs to someone else",
			ref:           Ref{Kind: SnapshotKind, Namespace: "dev", Name: "nightly"},
			wantAsWritten: "VolumeSnapshot dev/nightly",
		},
		{
			name:          "PersistentVolumeClaim kind in another group belongs to someone else",
			ref:           Ref{Group: "example.com", Kind: ClaimKind, Namespace: "dev", Name: "db"},
			wantAsWritten: "PersistentVolumeClaim dev/db",
		},
		{
			name:          "populator kind in another namespace is not handled",
			ref:           Ref{Group: "hello.example.com", Kind: "Hello", Namespace: "prod", Name: "h"},
			wantCrossNS:   true,
			wantAsWritten: "Hello prod/h",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.ref.IsSnapshot(); got != tc.wantSnapshot {
				t.Errorf("IsSnapshot() = %v, want %v", got, tc.wantSnapshot)
			}
			if got := tc.ref.IsClaim(); got != tc.wantClaim {
				t.Errorf("IsClaim() = %v, want %v", got, tc.wantClaim)
			}
			if got := tc.ref.Handled(); got != tc.wantHandled {
				t.Errorf("Handled() = %v, want %v", got, tc.wantHandled)
			}
			if got := tc.ref.CrossNamespace(claim); got != tc.wantCrossNS {
				t.Errorf("CrossNamespace() = %v, want %v", got, tc.wantCrossNS)
			}
			if got := tc.ref.String(); got != tc.wantAsWritten {
				t.Errorf("String() = %q, want %q", got, tc.wantAsWritten)
			}
		})
	}
}

func TestModeOf(t *testing.T) {
	tests := []struct {
		name string
		mode *v1.PersistentVolumeMode
		want v1.PersistentVolumeMode
	}{
		{name: "unset is Filesystem", want: v1.PersistentVolumeFilesystem},
		{name: "Filesystem", mode: ptr.To(v1.PersistentVolumeFilesystem), want: v1.PersistentVolumeFilesystem},
		{name: "Block", mode: ptr.To(v1.PersistentVolumeBlock), want: v1.PersistentVolumeBlock},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := ModeOf(tc.mode); got != tc.want {
				t.Errorf("ModeOf() = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name      string
		ref       Ref
		wantWords []string // none: valid
	}{
		{name: "snapshot", ref: Ref{Group: SnapshotGroup, Kind: SnapshotKind, Namespace: "prod", Name: "nightly"}},
		{name: "claim", ref: Ref{Kind: ClaimKind, Namespace: "dev", Name: "data.v2"}},
		{name: "populator kind: not judged", ref: Ref{Group: "backup.example.com", Kind: "backup", Namespace: "dev", Name: "Not A Name"}},
		{name: "VolumeSnapshot of another group: a populator's", ref: Ref{Group: "backup.example.com", Kind: SnapshotKind, Namespace: "dev", Name: "n"}},
		{name: "other snapshot kinds: a populator's, as upstream", ref: Ref{Group: SnapshotGroup, Kind: "VolumeSnapshotContent", Namespace: "dev", Name: "n"}},
		{name: "no kind", ref: Ref{Namespace: "dev", Name: "n"}, wantWords: []string{"names no kind"}},
		{name: "apiGroup core", ref: Ref{Group: "core", Kind: ClaimKind, Namespace: "dev", Name: "n"},
			wantWords: []string{`kind "PersistentVolumeClaim" in apiGroup "core"`, "leaving apiGroup out", "create the claim again"}},
		{name: "lower-case snapshot kind", ref: Ref{Group: SnapshotGroup, Kind: "volumesnapshot", Namespace: "prod", Name: "n"},
			wantWords: []string{`kind "volumesnapshot"`, "did you mean VolumeSnapshot"}},
		{name: "mixed-case snapshot kind", ref: Ref{Group: SnapshotGroup, Kind: "Volumesnapshot", Namespace: "prod", Name: "n"},
			wantWords: []string{"did you mean VolumeSnapshot"}},
		{name: "empty name", ref: Ref{Kind: ClaimKind, Namespace: "dev"}, wantWords: []string{"PersistentVolumeClaim without a name"}},
		{name: "name with upper case", ref: Ref{Group: SnapshotGroup, Kind: SnapshotKind, Namespace: "prod", Name: "Nightly"},
			wantWords: []string{`VolumeSnapshot "Nightly"`, "not a valid object name"}},
		{name: "name with a slash", ref: Ref{Kind: ClaimKind, Namespace: "prod", Name: "a/b"}, wantWords: []string{"not a valid object name"}},
		{name: "name with a NUL", ref: Ref{Kind: ClaimKind, Namespace: "prod", Name: "a\x00"}, wantWords: []string{"not a valid object name"}},
		{name: "namespace no namespace can have", ref: Ref{Kind: ClaimKind, Namespace: "prod.eu", Name: "a"},
			wantWords: []string{`namespace "prod.eu"`, "not a valid namespace name"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.ref.Validate()
			if tc.wantWords == nil {
				if err != nil {
					t.Fatalf("Validate(%+v) = %v, want nil", tc.ref, err)
				}
				return
			}
			e := wantFailure(t, err, Malformed, "DataSourceInvalid")
			for _, w := range tc.wantWords {
				if !strings.Contains(e.Message, w) {
					t.Errorf("message %q does not contain %q", e.Message, w)
				}
			}
		})
	}
}
