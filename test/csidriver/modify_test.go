package csidriver

import (
	"context"
	"maps"
	"path/filepath"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestMutableParameters walks a volume through what a VolumeAttributesClass
// does to it: created with the class's parameters, modified to another
// class's, both kept on disk across a restart.
func TestMutableParameters(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "data")
	ctx := context.Background()
	td := startDriver(t, Config{DataDir: dataDir})

	caps, err := td.ctrl.ControllerGetCapabilities(ctx, &csi.ControllerGetCapabilitiesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	modify := false
	for _, c := range caps.GetCapabilities() {
		modify = modify || c.GetRpc().GetType() == csi.ControllerServiceCapability_RPC_MODIFY_VOLUME
	}
	if !modify {
		t.Fatal("driver does not report MODIFY_VOLUME")
	}

	gold := map[string]string{"iops": "3000", "throughput": "125"}
	vol := createVolume(t, td, &csi.CreateVolumeRequest{Name: "pvc-gold", MutableParameters: gold})

	tests := []struct {
		name     string
		create   *csi.CreateVolumeRequest
		modify   *csi.ControllerModifyVolumeRequest
		wantCode codes.Code
		// want is the volume's mutable parameters afterwards ("pvc-gold"
		// for modify calls, the created volume for create calls).
		want map[string]string
	}{
		{name: "idempotent repeat with the same class",
			create: &csi.CreateVolumeRequest{Name: "pvc-gold", MutableParameters: gold}, wantCode: codes.OK, want: gold},
		{name: "repeat with another class",
			create: &csi.CreateVolumeRequest{Name: "pvc-gold", MutableParameters: map[string]string{"iops": "1"}}, wantCode: codes.AlreadyExists},
		{name: "repeat without a class",
			create: &csi.CreateVolumeRequest{Name: "pvc-gold"}, wantCode: codes.AlreadyExists},
		{name: "unknown key refused at create",
			create: &csi.CreateVolumeRequest{Name: "pvc-bad", MutableParameters: map[string]string{"XXX_FakeKey": "x"}}, wantCode: codes.InvalidArgument},
		{name: "modify without volume ID",
			modify: &csi.ControllerModifyVolumeRequest{MutableParameters: map[string]string{"iops": "1"}}, wantCode: codes.InvalidArgument},
		{name: "modify without parameters",
			modify: &csi.ControllerModifyVolumeRequest{VolumeId: vol.GetVolumeId()}, wantCode: codes.InvalidArgument, want: gold},
		{name: "modify with an unknown key changes nothing",
			modify:   &csi.ControllerModifyVolumeRequest{VolumeId: vol.GetVolumeId(), MutableParameters: map[string]string{"iops": "9", "XXX_FakeKey": "x"}},
			wantCode: codes.InvalidArgument, want: gold},
		{name: "modify a missing volume",
			modify: &csi.ControllerModifyVolumeRequest{VolumeId: newID(), MutableParameters: map[string]string{"iops": "1"}}, wantCode: codes.NotFound},
		{name: "modify sets the keys given and keeps the others",
			modify:   &csi.ControllerModifyVolumeRequest{VolumeId: vol.GetVolumeId(), MutableParameters: map[string]string{"iops": "6000"}},
			wantCode: codes.OK, want: map[string]string{"iops": "6000", "throughput": "125"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var err error
			id := vol.GetVolumeId()
			if tc.create != nil {
				tc.create.VolumeCapabilities = mountCap()
				var resp *csi.CreateVolumeResponse
				resp, err = td.ctrl.CreateVolume(ctx, tc.create)
				id = resp.GetVolume().GetVolumeId()
			} else {
				_, err = td.ctrl.ControllerModifyVolume(ctx, tc.modify)
			}
			if status.Code(err) != tc.wantCode {
				t.Fatalf("code %v (%v), want %v", status.Code(err), err, tc.wantCode)
			}
			if tc.want == nil {
				return
			}
			v, ok := td.store.getVolume(id)
			if !ok {
				t.Fatalf("volume %s not found", id)
			}
			if !maps.Equal(v.MutableParameters, tc.want) {
				t.Errorf("mutable parameters %v, want %v", v.MutableParameters, tc.want)
			}
		})
	}

	td.stop()
	vols, _, err := ReadDataDir(dataDir)
	if err != nil {
		t.Fatal(err)
	}
	if want := map[string]string{"iops": "6000", "throughput": "125"}; len(vols) != 1 || !maps.Equal(vols[0].MutableParameters, want) {
		t.Errorf("after restart: %+v, want one volume with mutable parameters %v", vols, want)
	}
}
