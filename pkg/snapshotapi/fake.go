package snapshotapi

import (
	"fmt"

	snapshotlisters "github.com/kubernetes-csi/external-snapshotter/client/v8/listers/volumesnapshot/v1"
)

// Fake stands in for a Watcher in tests of packages that read snapshots: the
// API is served with these listers, or, with Err set, Listers fails with it.
// Nil listers without Err count as not served.
type Fake struct {
	Snapshots snapshotlisters.VolumeSnapshotLister
	Contents  snapshotlisters.VolumeSnapshotContentLister
	Err       error
}

// Listers implements what the datasource resolver asks a Watcher.
func (f Fake) Listers() (snapshotlisters.VolumeSnapshotLister, snapshotlisters.VolumeSnapshotContentLister, error) {
	if f.Err != nil {
		return nil, nil, f.Err
	}
	if f.Snapshots == nil || f.Contents == nil {
		return nil, nil, fmt.Errorf("%w: the test gave no listers", ErrNotServed)
	}
	return f.Snapshots, f.Contents, nil
}
