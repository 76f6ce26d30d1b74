package provisioner

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/kubernetes-csi/csi-lib-utils/rpc"
	"google.golang.org/grpc"
	v1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// capacityCSI answers GetCapacity with the room of each segment value.
type capacityCSI struct {
	*fakeCSI
	room map[string]int64
	err  error
	reqs []*csi.GetCapacityRequest
}

func (c *capacityCSI) GetCapacity(_ context.Context, req *csi.GetCapacityRequest, _ ...grpc.CallOption) (*csi.GetCapacityResponse, error) {
	c.reqs = append(c.reqs, req)
	if c.err != nil {
		return nil, c.err
	}
	return &csi.GetCapacityResponse{AvailableCapacity: c.room[req.GetAccessibleTopology().GetSegments()["zone"]]}, nil
}

// zones is a TopologyBuilder whose requisite is the given zones.
type zones []string

func (z zones) Requirements(*storagev1.StorageClass, *v1.Node, string) (*csi.TopologyRequirement, error) {
	req := &csi.TopologyRequirement{}
	for _, name := range z {
		req.Requisite = append(req.Requisite, &csi.Topology{Segments: map[string]string{"zone": name}})
	}
	return req, nil
}

func TestHasCapacity(t *testing.T) {
	for _, tc := range []struct {
		name     string
		noCap    bool
		topology zones
		room     map[string]int64
		err      error
		want     bool
		wantErr  string
		wantReqs int
	}{
		{name: "driver without GET_CAPACITY: room assumed", noCap: true, want: true},
		{name: "room without topology", room: map[string]int64{"": gib(2)}, want: true, wantReqs: 1},
		{name: "too little room", room: map[string]int64{"": gib(1) - 1}, wantReqs: 1},
		{name: "room in the second requisite segment", topology: zones{"a", "b"}, room: map[string]int64{"b": gib(1)}, want: true, wantReqs: 2},
		{name: "no room in any segment", topology: zones{"a", "b"}, room: map[string]int64{"a": 10}, wantReqs: 2},
		{name: "GetCapacity fails", err: errors.New("unavailable"), wantErr: "GetCapacity", wantReqs: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			c := &capacityCSI{fakeCSI: e.csi, room: tc.room, err: tc.err}
			e.p.CSI = c
			if !tc.noCap {
				e.p.ControllerCaps = rpc.ControllerCapabilitySet{csi.ControllerServiceCapability_RPC_GET_CAPACITY: true}
			}
			if tc.topology != nil {
				e.p.Topology = tc.topology
				e.p.PluginCaps = rpc.PluginCapabilitySet{csi.PluginCapability_Service_VOLUME_ACCESSIBILITY_CONSTRAINTS: true}
			}
			got, err := e.p.HasCapacity(context.Background(), newClaim("dev", "data"), newClass(map[string]string{"type": "ssd", "csi.storage.k8s.io/fstype": "xfs"}),
				&v1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-b"}})
			if got != tc.want || (err == nil) != (tc.wantErr == "") || (err != nil && !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("HasCapacity = %v, %v; want %v, error %q", got, err, tc.want, tc.wantErr)
			}
			if len(c.reqs) != tc.wantReqs {
				t.Fatalf("%d GetCapacity calls, want %d", len(c.reqs), tc.wantReqs)
			}
			for _, r := range c.reqs {
				if r.Parameters["type"] != "ssd" || len(r.Parameters) != 1 || r.VolumeCapabilities[0].GetMount().GetFsType() != "xfs" {
					t.Errorf("GetCapacity asked with %v, %v; want CreateVolume's parameters and capabilities", r.Parameters, r.VolumeCapabilities)
				}
			}
			e.assertNoCreate(t)
		})
	}
}
