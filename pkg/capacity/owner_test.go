package capacity

import (
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/utils/ptr"
)

func controlledBy(apiVersion, kind, name string, uid types.UID) []metav1.OwnerReference {
	return []metav1.OwnerReference{{APIVersion: apiVersion, Kind: kind, Name: name, UID: uid, Controller: ptr.To(true)}}
}

func TestOwner(t *testing.T) {
	deployment := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "csi", Namespace: ns, UID: "deploy-uid"}}
	replicaSet := &appsv1.ReplicaSet{ObjectMeta: metav1.ObjectMeta{Name: "csi-7d9", Namespace: ns, UID: "rs-uid",
		OwnerReferences: controlledBy("apps/v1", "Deployment", "csi", "deploy-uid")}}
	deployedPod := &v1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "csi-7d9-x", Namespace: ns, UID: "pod-uid",
		OwnerReferences: controlledBy("apps/v1", "ReplicaSet", "csi-7d9", "rs-uid")}}
	statefulSet := &appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Name: "csi-sts", Namespace: ns, UID: "sts-uid"}}
	statefulPod := &v1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "csi-sts-0", Namespace: ns, UID: "sts-pod-uid",
		OwnerReferences: controlledBy("apps/v1", "StatefulSet", "csi-sts", "sts-uid")}}
	daemonSet := &appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Name: "csi-node", Namespace: ns, UID: "ds-uid"}}
	nodePod := &v1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "csi-node-x7", Namespace: ns, UID: "ds-pod-uid",
		OwnerReferences: controlledBy("apps/v1", "DaemonSet", "csi-node", "ds-uid")}}
	barePod := &v1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "bare", Namespace: ns, UID: "bare-uid"}}
	objs := []runtime.Object{deployment, replicaSet, deployedPod, statefulSet, statefulPod, daemonSet, nodePod, barePod}

	tests := []struct {
		name    string
		pod     string
		level   int
		want    *metav1.OwnerReference
		wantErr string
	}{
		{name: "negative level: no owner", pod: "csi-7d9-x", level: -1},
		{name: "level 0: the pod", pod: "csi-7d9-x", level: 0,
			want: &metav1.OwnerReference{APIVersion: "v1", Kind: "Pod", Name: "csi-7d9-x", UID: "pod-uid", Controller: ptr.To(true)}},
		{name: "level 1: the ReplicaSet", pod: "csi-7d9-x", level: 1,
			want: &metav1.OwnerReference{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "csi-7d9", UID: "rs-uid", Controller: ptr.To(true)}},
		{name: "level 2: the Deployment", pod: "csi-7d9-x", level: 2,
			want: &metav1.OwnerReference{APIVersion: "apps/v1", Kind: "Deployment", Name: "csi", UID: "deploy-uid", Controller: ptr.To(true)}},
		{name: "level 1: the StatefulSet", pod: "csi-sts-0", level: 1,
			want: &metav1.OwnerReference{APIVersion: "apps/v1", Kind: "StatefulSet", Name: "csi-sts", UID: "sts-uid", Controller: ptr.To(true)}},
		{name: "level 1: the DaemonSet (node deployment)", pod: "csi-node-x7", level: 1,
			want: &metav1.OwnerReference{APIVersion: "apps/v1", Kind: "DaemonSet", Name: "csi-node", UID: "ds-uid", Controller: ptr.To(true)}},
		{name: "level beyond the chain", pod: "csi-sts-0", level: 2, wantErr: "has no controller"},
		{name: "pod without controller", pod: "bare", level: 1, wantErr: "has no controller"},
		{name: "pod missing", pod: "nope", level: 0, wantErr: "reading the sidecar's pod"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Owner(t.Context(), fake.NewClientset(objs...), ns, tc.pod, tc.level)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if (got == nil) != (tc.want == nil) || (got != nil && (got.APIVersion != tc.want.APIVersion || got.Kind != tc.want.Kind ||
				got.Name != tc.want.Name || got.UID != tc.want.UID || !ptr.Deref(got.Controller, false))) {
				t.Errorf("owner %+v, want %+v", got, tc.want)
			}
		})
	}
}
