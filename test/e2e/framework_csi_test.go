package e2e

import (
	"context"
	"testing"
	"time"

	csi "github.com/container-storage-interface/spec/lib/go/csi"

	"github.com/crossns/external-provisioner/test/cluster"
)

// createDriverVolume creates a volume directly on the test driver over its
// gRPC socket, bypassing the sidecar, and deletes it when the test ends.
// It returns the volume ID; the volume's files live in
// <driver data dir>/volumes/<id>/.
func createDriverVolume(t *testing.T, name string, sizeBytes int64) string {
	t.Helper()
	conn, err := cluster.DialCSI(bed.DriverSocket())
	if err != nil {
		t.Fatalf("connecting to the driver: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	ctrl := csi.NewControllerClient(conn)
	ledger.addDriverVolume(name, t.Name())
	ctx, cancel := context.WithTimeout(testContext(t), 30*time.Second)
	defer cancel()
	resp, err := ctrl.CreateVolume(ctx, &csi.CreateVolumeRequest{
		Name:          name,
		CapacityRange: &csi.CapacityRange{RequiredBytes: sizeBytes},
		VolumeCapabilities: []*csi.VolumeCapability{{
			AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{}},
			AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER},
		}},
	})
	if err != nil {
		t.Fatalf("CreateVolume %s on the driver: %v", name, err)
	}
	id := resp.GetVolume().GetVolumeId()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := ctrl.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: id}); err != nil {
			t.Errorf("DeleteVolume %s: %v", id, err)
		}
	})
	return id
}
