package csidriver

import (
	"context"
	"os"
	"strings"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestVolumeIDPrefix: with a prefix (GCE PD's zonal form, as the bed's
// pd.csi.storage.gke.io instance uses) every volume ID handed out carries
// it, every call takes it back, and an ID without it names no volume.
func TestVolumeIDPrefix(t *testing.T) {
	const prefix = "projects/UNSPECIFIED/zones/UNSPECIFIED/disks/"
	td := startDriver(t, Config{VolumeIDPrefix: prefix})
	ctx := context.Background()
	src := createVolume(t, td, &csi.CreateVolumeRequest{Name: "src", VolumeCapabilities: mountCap()})
	id := src.GetVolumeId()
	bare, ok := strings.CutPrefix(id, prefix)
	if !ok || !validID(bare) {
		t.Fatalf("volume ID %q: want %s<32 hex digits>", id, prefix)
	}
	if _, err := os.Stat(td.VolumePath(id)); err != nil {
		t.Errorf("VolumePath(%q): %v", id, err)
	}
	snap, err := td.ctrl.CreateSnapshot(ctx, &csi.CreateSnapshotRequest{Name: "snap", SourceVolumeId: id})
	if err != nil {
		t.Fatal(err)
	}
	if got := snap.GetSnapshot().GetSourceVolumeId(); got != id {
		t.Errorf("snapshot source_volume_id %q, want %q", got, id)
	}
	clone := createVolume(t, td, &csi.CreateVolumeRequest{Name: "clone", VolumeCapabilities: mountCap(), VolumeContentSource: volumeSource(id)})
	if got := clone.GetContentSource().GetVolume().GetVolumeId(); got != id {
		t.Errorf("clone content_source %q, want %q", got, id)
	}
	list, err := td.ctrl.ListSnapshots(ctx, &csi.ListSnapshotsRequest{SourceVolumeId: id})
	if err != nil || len(list.GetEntries()) != 1 {
		t.Errorf("ListSnapshots by source %q = %v, %v; want the snapshot", id, list.GetEntries(), err)
	}

	for _, tc := range []struct {
		name     string
		volumeID string
		wantCode codes.Code
	}{
		{name: "with the prefix", volumeID: id, wantCode: codes.OK},
		{name: "store ID without the prefix", volumeID: bare, wantCode: codes.NotFound},
		{name: "other zone", volumeID: "projects/UNSPECIFIED/zones/us-central1-a/disks/" + bare, wantCode: codes.NotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := td.ctrl.ValidateVolumeCapabilities(ctx, &csi.ValidateVolumeCapabilitiesRequest{VolumeId: tc.volumeID, VolumeCapabilities: mountCap()})
			if got := status.Code(err); got != tc.wantCode {
				t.Errorf("ValidateVolumeCapabilities(%q) = %v, want %v", tc.volumeID, err, tc.wantCode)
			}
		})
	}
	// Deleting by the bare ID deletes nothing; by the handed-out ID it does.
	if _, err := td.ctrl.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: bare}); err != nil {
		t.Fatal(err)
	}
	if _, ok := td.store.getVolume(bare); !ok {
		t.Fatalf("DeleteVolume(%q) without the prefix deleted the volume", bare)
	}
	if _, err := td.ctrl.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: id}); err != nil {
		t.Fatal(err)
	}
	if _, ok := td.store.getVolume(bare); ok {
		t.Errorf("DeleteVolume(%q) left the volume", id)
	}
}
