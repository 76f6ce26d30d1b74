package bench

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"time"

	snapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"

	"github.com/crossns/external-provisioner/test/cluster"
)

// source is the VolumeSnapshot every claim restores, and the files in it.
type source struct {
	namespace string
	// files are the names and contents written into the source volume.
	files map[string][]byte
}

// sourceFileMiB is the size of each source file; SourceMiB makes that many.
const sourceFileMiB = 1

// makeSource creates the source namespace, a claim there, writes SourceMiB
// of files into its volume (the bed has no kubelet: the bench writes where
// the test driver keeps the volume), snapshots it and waits until the
// snapshot is ready.
func (b *bench) makeSource(ctx context.Context) (*source, error) {
	ns := b.cfg.SourceNamespace
	if err := b.c.createNamespaces(ctx, b.run, []string{ns}); err != nil {
		return nil, err
	}
	claim := &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: "db", Namespace: ns, Labels: map[string]string{runLabelKey: b.run}},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes:      []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			StorageClassName: ptr.To(cluster.StorageClassName),
			Resources:        corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse(claimSize)}},
		},
	}
	if _, err := b.c.kube.CoreV1().PersistentVolumeClaims(ns).Create(ctx, claim, metav1.CreateOptions{}); err != nil {
		return nil, fmt.Errorf("creating source claim: %w", err)
	}
	var volumeName string
	err := wait.PollUntilContextTimeout(ctx, pollInterval, b.cfg.Timeout, true, func(ctx context.Context) (bool, error) {
		got, err := b.c.kube.CoreV1().PersistentVolumeClaims(ns).Get(ctx, claim.Name, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		volumeName = got.Spec.VolumeName
		return got.Status.Phase == corev1.ClaimBound, nil
	})
	if err != nil {
		return nil, fmt.Errorf("waiting for source claim %s/db to bind: %w", ns, err)
	}
	pv, err := b.c.kube.CoreV1().PersistentVolumes().Get(ctx, volumeName, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("reading source PV: %w", err)
	}
	src := &source{namespace: ns, files: map[string][]byte{}}
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 42))
	for i := range b.cfg.SourceMiB / sourceFileMiB {
		data := make([]byte, sourceFileMiB<<20)
		for j := 0; j < len(data); j += 8 {
			v := rng.Uint64()
			for k := 0; k < 8; k++ {
				data[j+k] = byte(v >> (8 * k))
			}
		}
		src.files[fmt.Sprintf("data/part-%02d.bin", i)] = data
	}
	if err := writeFiles(b.volumeDir(pv.Spec.CSI.VolumeHandle), src.files); err != nil {
		return nil, err
	}

	snap := &snapshotv1.VolumeSnapshot{
		ObjectMeta: metav1.ObjectMeta{Name: snapshotName, Namespace: ns},
		Spec: snapshotv1.VolumeSnapshotSpec{
			Source:                  snapshotv1.VolumeSnapshotSource{PersistentVolumeClaimName: ptr.To(claim.Name)},
			VolumeSnapshotClassName: ptr.To(cluster.SnapshotClassName),
		},
	}
	if _, err := b.c.snaps.SnapshotV1().VolumeSnapshots(ns).Create(ctx, snap, metav1.CreateOptions{}); err != nil {
		return nil, fmt.Errorf("creating snapshot: %w", err)
	}
	err = wait.PollUntilContextTimeout(ctx, pollInterval, b.cfg.Timeout, true, func(ctx context.Context) (bool, error) {
		s, err := b.c.snaps.SnapshotV1().VolumeSnapshots(ns).Get(ctx, snapshotName, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		return s.Status != nil && s.Status.ReadyToUse != nil && *s.Status.ReadyToUse, nil
	})
	if err != nil {
		return nil, fmt.Errorf("waiting for snapshot %s/%s to be ready: %w", ns, snapshotName, err)
	}
	return src, nil
}

// volumeDir is where the test driver keeps a volume's files.
func (b *bench) volumeDir(handle string) string {
	return filepath.Join(b.bed.DriverDataDir(), "volumes", handle)
}

func writeFiles(dir string, files map[string][]byte) error {
	for name, data := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			return fmt.Errorf("writing source file: %w", err)
		}
	}
	return nil
}

// checkRestored compares a restored volume with the source: every file's
// size, and the contents when full is set (reading 200 copies in full would
// load the disk the next scenario needs).
func checkRestored(dir string, files map[string][]byte, full bool) error {
	for name, want := range files {
		p := filepath.Join(dir, name)
		if !full {
			st, err := os.Stat(p)
			if err != nil {
				return err
			}
			if st.Size() != int64(len(want)) {
				return fmt.Errorf("%s holds %d bytes, want %d", p, st.Size(), len(want))
			}
			continue
		}
		got, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if !bytes.Equal(got, want) {
			return fmt.Errorf("%s differs from the source", p)
		}
	}
	return nil
}
