package sharing

import (
	"fmt"
	"slices"

	v1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/cache"
)

// Indexes on the shared informers: each turns "this object changed" into
// "these objects are concerned" in one lookup.
const (
	// ShareFromIndex: claims by the source they name in ShareFromAnnotation
	// (Key.String()), waiting or bound.
	ShareFromIndex = "crossns.io/share-from"
	// HeldClaimIndex: claims carrying SourceFinalizer, by spec.volumeName.
	HeldClaimIndex = "crossns.io/shared-source-volume"
	// SharedVolumeIndex: subordinate PVs by the PV that owns their volume
	// (SharedVolumeAnnotation).
	SharedVolumeIndex = "crossns.io/shared-from-volume"
	// HandleIndex: CSI PVs by handleKey(driver, volume handle).
	HandleIndex = "crossns.io/volume-handle"
)

func handleKey(driver, handle string) string { return driver + "/" + handle }

// IndexByShareFrom is the claim indexer for ShareFromIndex; claims whose
// annotation names no claim are not indexed.
func IndexByShareFrom(obj any) ([]string, error) {
	claim, ok := obj.(*v1.PersistentVolumeClaim)
	if !ok {
		return nil, nil
	}
	k, ok, err := ShareFrom(claim)
	if !ok || err != nil {
		return nil, nil
	}
	return []string{k.String()}, nil
}

// IndexHeldClaims is the claim indexer for HeldClaimIndex.
func IndexHeldClaims(obj any) ([]string, error) {
	claim, ok := obj.(*v1.PersistentVolumeClaim)
	if !ok || !slices.Contains(claim.Finalizers, SourceFinalizer) || claim.Spec.VolumeName == "" {
		return nil, nil
	}
	return []string{claim.Spec.VolumeName}, nil
}

// IndexBySharedVolume is the PV indexer for SharedVolumeIndex.
func IndexBySharedVolume(obj any) ([]string, error) {
	pv, ok := obj.(*v1.PersistentVolume)
	if !ok {
		return nil, nil
	}
	if owner := pv.Annotations[SharedVolumeAnnotation]; owner != "" && IsSubordinate(pv) {
		return []string{owner}, nil
	}
	return nil, nil
}

// IndexByHandle is the PV indexer for HandleIndex.
func IndexByHandle(obj any) ([]string, error) {
	pv, ok := obj.(*v1.PersistentVolume)
	if !ok || pv.Spec.CSI == nil || pv.Spec.CSI.VolumeHandle == "" {
		return nil, nil
	}
	return []string{handleKey(pv.Spec.CSI.Driver, pv.Spec.CSI.VolumeHandle)}, nil
}

func (s *Sharer) addIndexes() error {
	if err := s.cfg.Claims.Informer().AddIndexers(cache.Indexers{ShareFromIndex: IndexByShareFrom, HeldClaimIndex: IndexHeldClaims}); err != nil {
		return fmt.Errorf("adding claim indexes for sharing: %w", err)
	}
	if err := s.cfg.Volumes.Informer().AddIndexers(cache.Indexers{SharedVolumeIndex: IndexBySharedVolume, HandleIndex: IndexByHandle}); err != nil {
		return fmt.Errorf("adding PV indexes for sharing: %w", err)
	}
	return nil
}

// byIndex returns the claims or PVs of an index key; an error (an index
// that does not exist) is a programming error and is returned.
func byIndex[T any](idx cache.Indexer, index, key string) ([]T, error) {
	objs, err := idx.ByIndex(index, key)
	if err != nil {
		return nil, err
	}
	out := make([]T, 0, len(objs))
	for _, o := range objs {
		if t, ok := o.(T); ok {
			out = append(out, t)
		}
	}
	return out, nil
}
