package access

import (
	"context"
	"errors"
	"slices"
	"testing"

	authorizationv1 "k8s.io/api/authorization/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	clienttesting "k8s.io/client-go/testing"
)

func TestReviewer(t *testing.T) {
	contents := Rule{Group: "snapshot.storage.k8s.io", Resource: "volumesnapshotcontents", Verbs: []string{"list", "watch"}}
	tests := []struct {
		name        string
		granted     []string // verbs kube-apiserver allows
		fail        bool
		wantMissing []string
		wantErr     bool
	}{
		{name: "all granted", granted: []string{"get", "list", "watch"}},
		{name: "upstream's rules: get and list only", granted: []string{"get", "list"}, wantMissing: []string{"watch"}},
		{name: "nothing granted", wantMissing: []string{"list", "watch"}},
		{name: "review fails", fail: true, wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			client := fake.NewClientset()
			client.PrependReactor("create", "selfsubjectaccessreviews", func(a clienttesting.Action) (bool, runtime.Object, error) {
				if tc.fail {
					return true, nil, errors.New("connection refused")
				}
				review := a.(clienttesting.CreateAction).GetObject().(*authorizationv1.SelfSubjectAccessReview)
				attrs := review.Spec.ResourceAttributes
				if attrs.Group != contents.Group || attrs.Resource != contents.Resource {
					t.Errorf("reviewed %s/%s, want %s/%s", attrs.Group, attrs.Resource, contents.Group, contents.Resource)
				}
				review.Status.Allowed = slices.Contains(tc.granted, attrs.Verb)
				return true, review, nil
			})
			missing, err := Reviewer{Client: client}.Allowed(context.Background(), contents)
			if (err != nil) != tc.wantErr {
				t.Fatalf("Allowed() error = %v, want error: %v", err, tc.wantErr)
			}
			if !slices.Equal(missing, tc.wantMissing) {
				t.Errorf("Allowed() missing = %q, want %q", missing, tc.wantMissing)
			}
		})
	}
}

func TestRuleString(t *testing.T) {
	r := Rule{Group: "snapshot.storage.k8s.io", Resource: "volumesnapshotcontents", Verbs: []string{"list", "watch"}}
	want := `apiGroups: ["snapshot.storage.k8s.io"], resources: ["volumesnapshotcontents"], verbs: ["list", "watch"]`
	if got := r.String(); got != want {
		t.Errorf("String() = %s, want %s", got, want)
	}
}
