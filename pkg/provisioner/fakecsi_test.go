package provisioner

import (
	"context"
	"sync"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// createFunc is one scripted answer of the fake driver to CreateVolume.
type createFunc func(req *csi.CreateVolumeRequest) (*csi.CreateVolumeResponse, error)

// fakeCSI is a csi.ControllerClient that implements CreateVolume and
// DeleteVolume only (any other call panics on the nil embedded interface).
// It records every request and answers CreateVolume from a script, one entry
// per call; when the script is used up it behaves like a well-behaved driver
// (see createOK).
type fakeCSI struct {
	csi.ControllerClient

	mu      sync.Mutex
	creates []*csi.CreateVolumeRequest
	deletes []*csi.DeleteVolumeRequest
	// script answers successive CreateVolume calls.
	script []createFunc
	// deleteErrs answers successive DeleteVolume calls; nil (or used up) succeeds.
	deleteErrs []error
}

func (f *fakeCSI) CreateVolume(_ context.Context, req *csi.CreateVolumeRequest, _ ...grpc.CallOption) (*csi.CreateVolumeResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.creates = append(f.creates, proto.Clone(req).(*csi.CreateVolumeRequest))
	answer := createOK()
	if len(f.script) > 0 {
		answer, f.script = f.script[0], f.script[1:]
	}
	return answer(req)
}

func (f *fakeCSI) DeleteVolume(_ context.Context, req *csi.DeleteVolumeRequest, _ ...grpc.CallOption) (*csi.DeleteVolumeResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.deletes = append(f.deletes, proto.Clone(req).(*csi.DeleteVolumeRequest))
	if len(f.deleteErrs) > 0 {
		err := f.deleteErrs[0]
		f.deleteErrs = f.deleteErrs[1:]
		if err != nil {
			return nil, err
		}
	}
	return &csi.DeleteVolumeResponse{}, nil
}

// deletedIDs returns the volume IDs passed to DeleteVolume, in order.
func (f *fakeCSI) deletedIDs() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var ids []string
	for _, d := range f.deletes {
		ids = append(ids, d.VolumeId)
	}
	return ids
}

// volumeID is the ID the fake driver gives the volume created for a request.
func volumeID(req *csi.CreateVolumeRequest) string { return "vol-" + req.Name }

// createOK answers like a conforming driver: a volume of exactly the required
// size, made from the requested content source.
func createOK() createFunc {
	return createWith(func(*csi.Volume) {})
}

// createWith answers like createOK, then lets the test change the volume.
func createWith(mutate func(v *csi.Volume)) createFunc {
	return func(req *csi.CreateVolumeRequest) (*csi.CreateVolumeResponse, error) {
		v := &csi.Volume{
			VolumeId:      volumeID(req),
			CapacityBytes: req.GetCapacityRange().GetRequiredBytes(),
			ContentSource: req.GetVolumeContentSource(),
		}
		mutate(v)
		return &csi.CreateVolumeResponse{Volume: v}, nil
	}
}

// createFails answers with a gRPC status error.
func createFails(code codes.Code) createFunc {
	return func(*csi.CreateVolumeRequest) (*csi.CreateVolumeResponse, error) {
		return nil, status.Error(code, "fake driver: "+code.String())
	}
}

// createErr answers with an arbitrary error.
func createErr(err error) createFunc {
	return func(*csi.CreateVolumeRequest) (*csi.CreateVolumeResponse, error) { return nil, err }
}
