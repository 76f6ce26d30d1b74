package preflight

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes/fake"
	clienttesting "k8s.io/client-go/testing"
)

func TestCrossNamespaceDataSource(t *testing.T) {
	forbidden := apierrors.NewForbidden(schema.GroupResource{Resource: "persistentvolumeclaims"}, "",
		errors.New(`User "system:serviceaccount:kube-system:csi-provisioner" cannot create resource "persistentvolumeclaims"`))
	// answer returns what the API server would: the claim as sent, with its
	// dataSourceRef changed by server.
	answer := func(server func(*v1.TypedObjectReference)) func(*v1.PersistentVolumeClaim) (runtime.Object, error) {
		return func(sent *v1.PersistentVolumeClaim) (runtime.Object, error) {
			got := sent.DeepCopy()
			got.Name = got.GenerateName + "x7k2p"
			server(got.Spec.DataSourceRef)
			return got, nil
		}
	}
	tests := []struct {
		name      string
		namespace string
		server    func(*v1.PersistentVolumeClaim) (runtime.Object, error)
		want      Result
		wantErr   []string
	}{
		{
			name:      "API server keeps dataSourceRef.namespace",
			namespace: "kube-system",
			server:    answer(func(*v1.TypedObjectReference) {}),
			want:      Kept,
		},
		{
			name:      "API server drops dataSourceRef.namespace",
			namespace: "kube-system",
			server:    answer(func(r *v1.TypedObjectReference) { r.Namespace = nil }),
			want:      Dropped,
		},
		{
			name:      "API server empties dataSourceRef.namespace",
			namespace: "kube-system",
			server:    answer(func(r *v1.TypedObjectReference) { r.Namespace = new(string) }),
			want:      Dropped,
		},
		{
			name:      "long namespace name",
			namespace: "a-namespace-with-a-name-that-is-long-but-still-valid-dns-label",
			server:    answer(func(*v1.TypedObjectReference) {}),
			want:      Kept,
		},
		{
			name:      "namespace named like the probe's source namespace",
			namespace: "csi-provisioner-preflight-source",
			server:    answer(func(*v1.TypedObjectReference) {}),
			want:      Kept,
		},
		{
			name:      "RBAC forbids the dry run",
			namespace: "kube-system",
			server:    func(*v1.PersistentVolumeClaim) (runtime.Object, error) { return nil, forbidden },
			want:      Unknown,
			wantErr:   []string{"forbidden", "grant the sidecar create on persistentvolumeclaims", `in "kube-system"`},
		},
		{
			name:      "other API error",
			namespace: "kube-system",
			server: func(*v1.PersistentVolumeClaim) (runtime.Object, error) {
				return nil, apierrors.NewServiceUnavailable("etcd is down")
			},
			want:    Unknown,
			wantErr: []string{"dry-run create of a PersistentVolumeClaim", "etcd is down"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			client := fake.NewClientset()
			var sent []*v1.PersistentVolumeClaim
			var opts []metav1.CreateOptions
			client.PrependReactor("create", "persistentvolumeclaims", func(a clienttesting.Action) (bool, runtime.Object, error) {
				ca := a.(clienttesting.CreateActionImpl)
				claim := ca.GetObject().(*v1.PersistentVolumeClaim)
				sent = append(sent, claim)
				opts = append(opts, ca.GetCreateOptions())
				obj, err := tc.server(claim)
				return true, obj, err
			})

			got, err := CrossNamespaceDataSource(context.Background(), client, tc.namespace)

			if got != tc.want {
				t.Errorf("CrossNamespaceDataSource() = %v, want %v", got, tc.want)
			}
			if tc.wantErr == nil && err != nil {
				t.Errorf("CrossNamespaceDataSource() error = %v, want nil", err)
			}
			for _, w := range tc.wantErr {
				if err == nil || !strings.Contains(err.Error(), w) {
					t.Errorf("CrossNamespaceDataSource() error = %v, want it to contain %q", err, w)
				}
			}
			if len(sent) != 1 {
				t.Fatalf("claims sent = %d, want 1", len(sent))
			}
			// Nothing may be stored: the create must be a server-side dry run.
			if !slices.Equal(opts[0].DryRun, []string{metav1.DryRunAll}) {
				t.Errorf("create options DryRun = %q, want [%s]", opts[0].DryRun, metav1.DryRunAll)
			}
			c := sent[0]
			if c.Namespace != tc.namespace || c.GenerateName == "" || c.Name != "" {
				t.Errorf("probe claim %s/%s (generateName %q), want a generated name in %q", c.Namespace, c.Name, c.GenerateName, tc.namespace)
			}
			ref := c.Spec.DataSourceRef
			if ref == nil || ref.Namespace == nil {
				t.Fatalf("probe claim dataSourceRef = %+v, want one with a namespace", ref)
			}
			// The API server validates dataSourceRef.namespace as a namespace name.
			if errs := validation.IsDNS1123Label(*ref.Namespace); len(errs) > 0 {
				t.Errorf("probe dataSourceRef.namespace %q is not a valid namespace name: %v", *ref.Namespace, errs)
			}
			if *ref.Namespace == tc.namespace {
				t.Errorf("probe dataSourceRef.namespace = %q, want another namespace than the claim's", *ref.Namespace)
			}
		})
	}
}
