package cluster

import (
	"context"
	"fmt"

	snapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	snapshotclient "github.com/kubernetes-csi/external-snapshotter/client/v8/clientset/versioned"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

// createClasses creates the StorageClass and VolumeSnapshotClass of the test
// driver; ones already there are kept as they are.
func (c *Cluster) createClasses(ctx context.Context) error {
	binding := storagev1.VolumeBindingImmediate
	reclaim := corev1.PersistentVolumeReclaimDelete
	sc := &storagev1.StorageClass{
		ObjectMeta:           metav1.ObjectMeta{Name: StorageClassName},
		Provisioner:          DriverName,
		VolumeBindingMode:    &binding,
		ReclaimPolicy:        &reclaim,
		AllowVolumeExpansion: ptr.To(false),
	}
	if _, err := c.kube.StorageV1().StorageClasses().Create(ctx, sc, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating StorageClass %s: %w", StorageClassName, err)
	}
	snaps, err := snapshotclient.NewForConfig(c.restConfig)
	if err != nil {
		return fmt.Errorf("building snapshot client: %w", err)
	}
	vsc := &snapshotv1.VolumeSnapshotClass{
		ObjectMeta:     metav1.ObjectMeta{Name: SnapshotClassName},
		Driver:         DriverName,
		DeletionPolicy: snapshotv1.VolumeSnapshotContentDelete,
	}
	if _, err := snaps.SnapshotV1().VolumeSnapshotClasses().Create(ctx, vsc, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating VolumeSnapshotClass %s: %w", SnapshotClassName, err)
	}
	return nil
}
