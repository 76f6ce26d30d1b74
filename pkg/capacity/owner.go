package capacity

import (
	"context"
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
)

// Owner finds the object that owns published CSIStorageCapacity objects, so
// they are garbage collected with the sidecar's deployment: level 0 is the
// pod itself, each further level follows the controller reference once
// (1: the StatefulSet, DaemonSet or ReplicaSet, 2: the ReplicaSet's
// Deployment). It
// reads the API server, not caches: it runs once at start.
func Owner(ctx context.Context, client kubernetes.Interface, namespace, podName string, level int) (*metav1.OwnerReference, error) {
	if level < 0 {
		return nil, nil
	}
	pod, err := client.CoreV1().Pods(namespace).Get(ctx, podName, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("reading the sidecar's pod %s/%s: %w", namespace, podName, err)
	}
	ref := metav1.OwnerReference{APIVersion: "v1", Kind: "Pod", Name: pod.Name, UID: pod.UID, Controller: ptr.To(true)}
	obj := metav1.Object(pod)
	for i := 1; i <= level; i++ {
		ctrl := metav1.GetControllerOf(obj)
		if ctrl == nil {
			return nil, fmt.Errorf("%s %s/%s has no controller, so --capacity-ownerref-level=%d cannot be resolved; use %d", ref.Kind, namespace, ref.Name, level, i-1)
		}
		if obj, err = getOwner(ctx, client, namespace, ctrl); err != nil {
			return nil, err
		}
		ref = metav1.OwnerReference{APIVersion: ctrl.APIVersion, Kind: ctrl.Kind, Name: obj.GetName(), UID: obj.GetUID(), Controller: ptr.To(true)}
	}
	return &ref, nil
}

// getOwner reads an owner of the kinds pods of a sidecar are run by.
func getOwner(ctx context.Context, client kubernetes.Interface, namespace string, ref *metav1.OwnerReference) (metav1.Object, error) {
	gv, err := schema.ParseGroupVersion(ref.APIVersion)
	if err != nil {
		return nil, fmt.Errorf("owner %s %q: %w", ref.Kind, ref.Name, err)
	}
	if gv.Group != "apps" {
		return nil, fmt.Errorf("owner %s %s/%s is not an apps object; lower --capacity-ownerref-level", ref.Kind, ref.APIVersion, ref.Name)
	}
	apps := client.AppsV1()
	var obj metav1.Object
	switch ref.Kind {
	case "ReplicaSet":
		obj, err = apps.ReplicaSets(namespace).Get(ctx, ref.Name, metav1.GetOptions{})
	case "Deployment":
		obj, err = apps.Deployments(namespace).Get(ctx, ref.Name, metav1.GetOptions{})
	case "StatefulSet":
		obj, err = apps.StatefulSets(namespace).Get(ctx, ref.Name, metav1.GetOptions{})
	case "DaemonSet": // --node-deployment
		obj, err = apps.DaemonSets(namespace).Get(ctx, ref.Name, metav1.GetOptions{})
	default:
		return nil, fmt.Errorf("owner kind %s of %s/%s is not supported; lower --capacity-ownerref-level", ref.Kind, namespace, ref.Name)
	}
	if err != nil {
		return nil, fmt.Errorf("reading owner %s %s/%s: %w", ref.Kind, namespace, ref.Name, err)
	}
	return obj, nil
}
