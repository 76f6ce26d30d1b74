package csidriver

import (
	"context"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
)

// TestMultiNodeAccessModes: live sharing (pkg/sharing) needs volumes many
// nodes may mount. The driver creates and confirms them with the multi-node
// modes — ReadWriteMany and ReadOnlyMany's — for both access types, and a
// volume confirms a mode other than the one it was created with (a share
// asks ReadOnlyMany of a ReadWriteMany volume).
func TestMultiNodeAccessModes(t *testing.T) {
	td := startDriver(t, Config{Capacity: "100Mi"})
	ctx := context.Background()
	capOf := func(mode csi.VolumeCapability_AccessMode_Mode, block bool) *csi.VolumeCapability {
		c := &csi.VolumeCapability{AccessMode: &csi.VolumeCapability_AccessMode{Mode: mode}}
		if block {
			c.AccessType = &csi.VolumeCapability_Block{Block: &csi.VolumeCapability_BlockVolume{}}
		} else {
			c.AccessType = &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{}}
		}
		return c
	}
	modes := []csi.VolumeCapability_AccessMode_Mode{
		csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER,
		csi.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY,
		csi.VolumeCapability_AccessMode_MULTI_NODE_SINGLE_WRITER,
	}
	for _, block := range []bool{false, true} {
		name := "rwx-mount"
		if block {
			name = "rwx-block"
		}
		v := createVolume(t, td, &csi.CreateVolumeRequest{Name: name, CapacityRange: &csi.CapacityRange{RequiredBytes: 1 << 20},
			VolumeCapabilities: []*csi.VolumeCapability{capOf(csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER, block)}})
		for _, m := range modes {
			resp, err := td.ctrl.ValidateVolumeCapabilities(ctx, &csi.ValidateVolumeCapabilitiesRequest{
				VolumeId: v.GetVolumeId(), VolumeCapabilities: []*csi.VolumeCapability{capOf(m, block)}})
			if err != nil || resp.GetConfirmed() == nil {
				t.Errorf("%s: ValidateVolumeCapabilities(%s) = %v, %v; want confirmed", name, m, resp, err)
			}
		}
	}
}
