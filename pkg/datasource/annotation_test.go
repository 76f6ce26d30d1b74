package datasource

import (
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

func TestAnnotationRef(t *testing.T) {
	annotated := func(value string) *v1.PersistentVolumeClaim {
		return &v1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Namespace: "dev", Name: "copy",
			Annotations: map[string]string{DataSourceAnnotation: value}}}
	}
	both := annotated("PersistentVolumeClaim/prod/data")
	both.Spec.DataSourceRef = &v1.TypedObjectReference{Kind: ClaimKind, Name: "data"}
	tests := []struct {
		name    string
		claim   *v1.PersistentVolumeClaim
		want    Ref
		wantErr string // in Validate's message; "" for a usable reference
	}{
		{name: "no annotation", claim: &v1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Namespace: "dev"}}},
		{
			name:  "snapshot in another namespace",
			claim: annotated("VolumeSnapshot.snapshot.storage.k8s.io/prod/nightly"),
			want:  Ref{Group: SnapshotGroup, Kind: SnapshotKind, Namespace: "prod", Name: "nightly", Annotated: true},
		},
		{
			name:  "claim in another namespace, core group left out",
			claim: annotated("PersistentVolumeClaim/prod/data"),
			want:  Ref{Kind: ClaimKind, Namespace: "prod", Name: "data", Annotated: true},
		},
		{
			name:  "same namespace",
			claim: annotated("PersistentVolumeClaim/dev/data"),
			want:  Ref{Kind: ClaimKind, Namespace: "dev", Name: "data", Annotated: true},
		},
		{name: "two parts", claim: annotated("VolumeSnapshot.snapshot.storage.k8s.io/nightly"), wantErr: "not <Kind>.<group>/<namespace>/<name>"},
		{name: "four parts", claim: annotated("VolumeSnapshot/x/prod/nightly"), wantErr: "not <Kind>.<group>/<namespace>/<name>"},
		{name: "empty", claim: annotated(""), wantErr: "not <Kind>.<group>/<namespace>/<name>"},
		{name: "empty name", claim: annotated("PersistentVolumeClaim/prod/"), wantErr: "not <Kind>.<group>/<namespace>/<name>"},
		{name: "snapshot without group", claim: annotated("VolumeSnapshot/prod/nightly"), wantErr: "can name only"},
		{name: "group core", claim: annotated("PersistentVolumeClaim.core/prod/data"), wantErr: "can name only"},
		{name: "odd name", claim: annotated("PersistentVolumeClaim/prod/Data_1"), wantErr: "not a valid object name"},
		{name: "both annotation and spec", claim: both, wantErr: "both in annotation"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := RefOf(tc.claim)
			_, annotatedClaim := tc.claim.Annotations[DataSourceAnnotation]
			if ok != (annotatedClaim || tc.claim.Spec.DataSourceRef != nil) {
				t.Fatalf("RefOf() ok = %v", ok)
			}
			if !ok {
				return
			}
			err := got.Validate()
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Validate() = %v, want an error mentioning %q", err, tc.wantErr)
				}
				de, isErr := AsError(err)
				if !isErr || de.Kind != Malformed {
					t.Errorf("Validate() = %#v, want a Malformed *Error", err)
				}
				if got.Annotated && strings.Contains(err.Error(), "create the claim again with it corrected") {
					t.Errorf("Validate() = %q: an annotation is fixed by editing it, not by a new claim", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Validate() = %v", err)
			}
			if ok && got != tc.want {
				t.Errorf("RefOf() = %+v, want %+v", got, tc.want)
			}
		})
	}
}

// A claim naming a source with the annotation is cross-namespace exactly as
// with spec.dataSourceRef.namespace: same key, same cross-namespace answer.
func TestAnnotationRefMatchesDataSourceRef(t *testing.T) {
	viaSpec := &v1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Namespace: "dev"}, Spec: v1.PersistentVolumeClaimSpec{
		DataSourceRef: &v1.TypedObjectReference{APIGroup: ptr.To(SnapshotGroup), Kind: SnapshotKind, Name: "nightly", Namespace: ptr.To("prod")}}}
	viaAnn := &v1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Namespace: "dev",
		Annotations: map[string]string{DataSourceAnnotation: "VolumeSnapshot.snapshot.storage.k8s.io/prod/nightly"}}}
	a, _ := RefOf(viaSpec)
	b, _ := RefOf(viaAnn)
	if a.Key() != b.Key() || a.CrossNamespace(viaSpec) != b.CrossNamespace(viaAnn) || !b.Handled() {
		t.Errorf("spec %+v and annotation %+v differ", a, b)
	}
}
