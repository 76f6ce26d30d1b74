package invariants

import (
	"context"
	"fmt"
	"slices"

	snapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	snapshotclient "github.com/kubernetes-csi/external-snapshotter/client/v8/clientset/versioned"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/crossns/external-provisioner/test/csidriver"
)

// Clients are what a survey reads the API with.
type Clients struct {
	Kube      kubernetes.Interface
	Snapshots snapshotclient.Interface
}

// State is what one survey read.
type State struct {
	// Volumes and Snapshots are the driver's backend.
	Volumes   []csidriver.Volume
	Snapshots []csidriver.Snapshot
	// PVs and Contents are the driver's.
	PVs      []corev1.PersistentVolume
	Contents []snapshotv1.VolumeSnapshotContent
	// Objects of the surveyed namespaces.
	Claims          []corev1.PersistentVolumeClaim
	VolumeSnapshots []snapshotv1.VolumeSnapshot
	Namespaces      []corev1.Namespace
	// NoSnapshotAPI: the snapshot CRDs were not installed, so backend
	// snapshots cannot be compared.
	NoSnapshotAPI bool
}

// Survey reads the driver's backend under dataDir and the API objects the
// invariants are about; the claims, VolumeSnapshots and Namespace objects of
// namespaces are read too. The backend is read first: an object created
// meanwhile is then in the API but not yet compared (never a false leak of
// an object that just appeared in both).
func Survey(ctx context.Context, c Clients, dataDir, driver string, namespaces []string) (*State, error) {
	s := &State{}
	var err error
	if s.Volumes, s.Snapshots, err = csidriver.ReadDataDir(dataDir); err != nil {
		return nil, fmt.Errorf("reading the driver's data dir: %w", err)
	}
	pvs, err := c.Kube.CoreV1().PersistentVolumes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("listing PVs: %w", err)
	}
	for _, pv := range pvs.Items {
		if pv.Spec.CSI != nil && pv.Spec.CSI.Driver == driver {
			s.PVs = append(s.PVs, pv)
		}
	}
	// A test may have removed the snapshot CRDs (and installs them again
	// at its end): then there are no snapshot objects to compare.
	contents, err := c.Snapshots.SnapshotV1().VolumeSnapshotContents().List(ctx, metav1.ListOptions{})
	if apierrors.IsNotFound(err) {
		contents, err = &snapshotv1.VolumeSnapshotContentList{}, nil
		s.NoSnapshotAPI = true
	}
	if err != nil {
		return nil, fmt.Errorf("listing VolumeSnapshotContents: %w", err)
	}
	for _, vsc := range contents.Items {
		if vsc.Spec.Driver == driver {
			s.Contents = append(s.Contents, vsc)
		}
	}
	if len(namespaces) == 0 {
		return s, nil
	}
	mine := func(ns string) bool { return slices.Contains(namespaces, ns) }
	nsList, err := c.Kube.CoreV1().Namespaces().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("listing namespaces: %w", err)
	}
	for _, n := range nsList.Items {
		if mine(n.Name) {
			s.Namespaces = append(s.Namespaces, n)
		}
	}
	// One list each, whatever the number of namespaces (the soak has 50).
	claims, err := c.Kube.CoreV1().PersistentVolumeClaims(metav1.NamespaceAll).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("listing claims: %w", err)
	}
	for _, pvc := range claims.Items {
		if mine(pvc.Namespace) {
			s.Claims = append(s.Claims, pvc)
		}
	}
	if s.NoSnapshotAPI {
		return s, nil
	}
	snaps, err := c.Snapshots.SnapshotV1().VolumeSnapshots(metav1.NamespaceAll).List(ctx, metav1.ListOptions{})
	if apierrors.IsNotFound(err) {
		snaps, err = &snapshotv1.VolumeSnapshotList{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("listing VolumeSnapshots: %w", err)
	}
	for _, vs := range snaps.Items {
		if mine(vs.Namespace) {
			s.VolumeSnapshots = append(s.VolumeSnapshots, vs)
		}
	}
	return s, nil
}
