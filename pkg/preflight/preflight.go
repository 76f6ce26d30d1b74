// Package preflight checks, at start, that the cluster can carry what the
// sidecar's gates promise: with CrossNamespaceVolumeDataSource on, the API
// server must keep spec.dataSourceRef.namespace, or every cross-namespace
// claim silently turns into a same-namespace one.
package preflight

import (
	"context"
	"fmt"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// Result of the cross-namespace check.
type Result int

const (
	// Kept: the API server keeps dataSourceRef.namespace.
	Kept Result = iota
	// Dropped: the API server's CrossNamespaceVolumeDataSource gate is off.
	Dropped
	// Unknown: the check could not run (e.g. RBAC forbids the dry run).
	Unknown
)

// CrossNamespaceDataSource asks the API server, with a server-side dry run
// (nothing is stored), whether it keeps spec.dataSourceRef.namespace.
func CrossNamespaceDataSource(ctx context.Context, client kubernetes.Interface, namespace string) (Result, error) {
	group := "snapshot.storage.k8s.io"
	// A fixed name, not one derived from namespace: the API server validates
	// it as a namespace name (at most 63 characters).
	other := "csi-provisioner-preflight-source"
	if other == namespace {
		other += "-2"
	}
	claim := &v1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "csi-provisioner-preflight-", Namespace: namespace},
		Spec: v1.PersistentVolumeClaimSpec{
			AccessModes: []v1.PersistentVolumeAccessMode{v1.ReadWriteOnce},
			Resources:   v1.VolumeResourceRequirements{Requests: v1.ResourceList{v1.ResourceStorage: resource.MustParse("1Mi")}},
			DataSourceRef: &v1.TypedObjectReference{
				APIGroup: &group, Kind: "VolumeSnapshot", Name: "preflight", Namespace: &other,
			},
		},
	}
	got, err := client.CoreV1().PersistentVolumeClaims(namespace).Create(ctx, claim, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
	if err != nil {
		if apierrors.IsForbidden(err) {
			return Unknown, fmt.Errorf("dry-run create of a PersistentVolumeClaim in %q is forbidden (grant the sidecar create on persistentvolumeclaims to enable this check): %w", namespace, err)
		}
		return Unknown, fmt.Errorf("dry-run create of a PersistentVolumeClaim in %q: %w", namespace, err)
	}
	if r := got.Spec.DataSourceRef; r != nil && r.Namespace != nil && *r.Namespace == other {
		return Kept, nil
	}
	return Dropped, nil
}
