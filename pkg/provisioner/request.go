package provisioner

import (
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/kubernetes-csi/csi-lib-utils/accessmodes"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/types"

	"github.com/crossns/external-provisioner/pkg/datasource"
)

// volumeName is the name given to CreateVolume. It derives from the claim
// UID, so a retried CreateVolume is idempotent and a crash cannot create a
// second volume for the same claim.
func volumeName(prefix string, uuidLength int, uid types.UID) (string, error) {
	id := string(uid)
	if id == "" {
		// Every claim read from the API has a UID; without one all such
		// claims would share a volume name.
		return "", fmt.Errorf("claim has no UID")
	}
	if uuidLength >= 0 {
		id = strings.ReplaceAll(id, "-", "")
		if uuidLength > len(id) {
			return "", fmt.Errorf("--volume-name-uuid-length %d is longer than the claim UID %q", uuidLength, uid)
		}
		id = id[:uuidLength]
	}
	return prefix + "-" + id, nil
}

// capacityRange is what the claim asks for: requests as the floor, limits
// (when set) as the ceiling.
func capacityRange(claim *v1.PersistentVolumeClaim) (*csi.CapacityRange, error) {
	req, ok := claim.Spec.Resources.Requests[v1.ResourceStorage]
	if !ok {
		return nil, fmt.Errorf("claim has no storage request: set spec.resources.requests.storage")
	}
	if err := checkBytes("request", req); err != nil {
		return nil, err
	}
	cr := &csi.CapacityRange{RequiredBytes: req.Value()}
	if lim, ok := claim.Spec.Resources.Limits[v1.ResourceStorage]; ok {
		if err := checkBytes("limit", lim); err != nil {
			return nil, err
		}
		if lim.Value() < req.Value() {
			return nil, fmt.Errorf("claim's storage limit %s is smaller than its request %s", lim.String(), req.String())
		}
		cr.LimitBytes = lim.Value()
	}
	return cr, nil
}

// checkBytes refuses a size CSI cannot be asked for. Quantity.Value does not
// fail: past int64 it returns garbage (1e30 is 0, 2^63 is negative) or, for
// a binary suffix, clamps to the largest int64, which no request means. A
// zero size would let the driver pick one.
func checkBytes(what string, q resource.Quantity) error {
	if q.Sign() <= 0 {
		return fmt.Errorf("claim's storage %s %s is not positive: ask for the size the volume needs", what, q.String())
	}
	if q.CmpInt64(math.MaxInt64) >= 0 {
		return fmt.Errorf("claim's storage %s %s is larger than any volume CSI can create (at most %d bytes, about 8Ei): ask for the size the volume needs",
			what, q.String(), int64(math.MaxInt64-1))
	}
	return nil
}

// volumeCapabilities maps the claim's access modes and volume mode to CSI:
// one capability per access mode, in the claim's order, all with the same
// access type, as upstream sends them. The driver must support every one of
// them (CSI CreateVolume), so a claim with ReadWriteOnce and ReadWriteMany
// gets a volume usable both ways, not one merged mode. Block volumes carry no
// file system; mount volumes carry the fstype and the class's mount options.
func volumeCapabilities(claim *v1.PersistentVolumeClaim, fsType string, mountOptions []string, singleNodeMultiWriter bool) ([]*csi.VolumeCapability, error) {
	if len(claim.Spec.AccessModes) == 0 {
		return nil, fmt.Errorf("claim has no access modes: set spec.accessModes")
	}
	block := datasource.ModeOf(claim.Spec.VolumeMode) == v1.PersistentVolumeBlock
	caps := make([]*csi.VolumeCapability, 0, len(claim.Spec.AccessModes))
	for _, m := range claim.Spec.AccessModes {
		mode, err := accessmodes.ToCSIAccessMode([]v1.PersistentVolumeAccessMode{m}, singleNodeMultiWriter)
		if err != nil {
			return nil, fmt.Errorf("access mode %s: %w", m, err)
		}
		c := &csi.VolumeCapability{AccessMode: &csi.VolumeCapability_AccessMode{Mode: mode}}
		if block {
			c.AccessType = &csi.VolumeCapability_Block{Block: &csi.VolumeCapability_BlockVolume{}}
		} else {
			c.AccessType = &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{FsType: fsType, MountFlags: slices.Clone(mountOptions)}}
		}
		caps = append(caps, c)
	}
	return caps, nil
}

// ValidateNaming checks --volume-name-prefix and --volume-name-uuid-length at
// start, so a bad flag fails the sidecar rather than every claim.
func ValidateNaming(prefix string, uuidLength int) error {
	if prefix == "" {
		return fmt.Errorf("--volume-name-prefix must not be empty")
	}
	if uuidLength < -1 || uuidLength == 0 {
		return fmt.Errorf("--volume-name-uuid-length must be -1 (the whole UID) or positive, not %d", uuidLength)
	}
	return nil
}
