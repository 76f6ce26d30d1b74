package provisioner

import (
	"context"
	"fmt"

	"github.com/container-storage-interface/spec/lib/go/csi"
	v1 "k8s.io/api/core/v1"

	"github.com/crossns/external-provisioner/pkg/inflight"
)

// createVolume records the call (durably, before it is made), decides the
// source once more (authorize), calls the driver and classifies failures.
// The record ends when the PV exists (pkg/inflight), when the driver refused
// the call for good, or when the volume was deleted again; while the outcome
// is unknown it stays.
//
// Writing the record can take seconds (it waits for the client's rate limit
// and for the batch it is written with), so a decision taken before it may be
// stale by the time of the call: authorize runs after the write, right before
// the call. When it refuses, the record of this attempt is dropped (no call
// was made under it); a record an earlier attempt left stays, so its call,
// which may still run, is settled.
func (p *Provisioner) createVolume(ctx context.Context, claim *v1.PersistentVolumeClaim, pvName, source string, secretRef *v1.SecretReference,
	req *csi.CreateVolumeRequest, nodeSelected bool, authorize func() error) (*csi.CreateVolumeResponse, error) {
	_, earlier := p.Records.Get(claim.UID)
	rec := inflight.Record{ClaimUID: claim.UID, Namespace: claim.Namespace, Claim: claim.Name, PVName: pvName,
		Source: source, SecretRef: secretRef, Request: req}
	if err := p.Records.Add(ctx, rec); err != nil {
		return nil, fail(transient, fmt.Errorf("not calling CreateVolume %q: %w", req.Name, err))
	}
	if err := authorize(); err != nil {
		if !earlier {
			p.Records.Remove(claim.UID)
		}
		return nil, err
	}
	cctx, cancel := context.WithTimeout(ctx, p.Timeout)
	resp, err := p.CSI.CreateVolume(cctx, req)
	cancel()
	if err != nil {
		kind := createFailure(err, nodeSelected)
		if kind != inFlight {
			p.Records.Remove(claim.UID) // the driver made nothing
		}
		return nil, fail(kind, fmt.Errorf("CreateVolume %q: %w", req.Name, err))
	}
	if resp.GetVolume() == nil || resp.Volume.VolumeId == "" {
		p.Records.Remove(claim.UID)
		return nil, fail(invalid, fmt.Errorf("CreateVolume %q: driver returned no volume", req.Name))
	}
	if req.VolumeContentSource != nil && resp.Volume.ContentSource == nil {
		// A driver that ignores the source returns an empty volume the user
		// would take for a copy.
		done := p.discard(ctx, claim.UID, resp.Volume.VolumeId, req.Secrets)
		return nil, fail(invalid, fmt.Errorf("driver created volume %q without the requested data source; %s", resp.Volume.VolumeId, done))
	}
	if _, err := checkCapacity(req.CapacityRange.RequiredBytes, resp.Volume.CapacityBytes); err != nil {
		done := p.discard(ctx, claim.UID, resp.Volume.VolumeId, req.Secrets)
		return nil, fail(invalid, fmt.Errorf("%w; %s", err, done))
	}
	return resp, nil
}

func (p *Provisioner) deleteVolume(ctx context.Context, volumeID string, secrets map[string]string) error {
	cctx, cancel := context.WithTimeout(ctx, p.Timeout)
	defer cancel()
	if _, err := p.CSI.DeleteVolume(cctx, &csi.DeleteVolumeRequest{VolumeId: volumeID, Secrets: secrets}); err != nil {
		return fmt.Errorf("DeleteVolume %q: %w", volumeID, err)
	}
	return nil
}
