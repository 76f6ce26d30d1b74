package provisioner

import (
	"errors"
	"slices"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/protobuf/proto"
	v1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/sig-storage-lib-external-provisioner/v10/controller"
)

// assertRefused checks a claim refused while building the request: a final
// error the loop reports (not ignored), no volume, no Event of ours.
func assertRefused(t *testing.T, e *env, pv *v1.PersistentVolume, state controller.ProvisioningState, err error, want string) {
	t.Helper()
	assertErr(t, err, want)
	if isIgnored(err) {
		t.Errorf("error is an IgnoredError; the loop would hide it from the user")
	}
	if pv != nil {
		t.Errorf("got PV %s, want none", pv.Name)
	}
	if state != controller.ProvisioningFinished {
		t.Errorf("state = %s, want %s", state, controller.ProvisioningFinished)
	}
	e.assertNoCreate(t)
	e.assertEvents(t)
}

// TestAccessModeToCSI: CreateVolume gets one capability per access mode of
// the claim, in the claim's order (as upstream sends them), never one merged
// mode: a driver asked for ReadWriteOnce and ReadWriteMany must make a volume
// that supports both.
func TestAccessModeToCSI(t *testing.T) {
	const (
		snw  = csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER
		snmw = csi.VolumeCapability_AccessMode_SINGLE_NODE_MULTI_WRITER
		snsw = csi.VolumeCapability_AccessMode_SINGLE_NODE_SINGLE_WRITER
		mnro = csi.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY
		mnmw = csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER
	)
	type csiMode = csi.VolumeCapability_AccessMode_Mode
	tests := []struct {
		name string
		// modes of the claim
		modes []v1.PersistentVolumeAccessMode
		// singleNodeMultiWriter: the driver has SINGLE_NODE_MULTI_WRITER
		singleNodeMultiWriter bool
		want                  []csiMode
		wantErr               string
	}{
		{name: "RWO", modes: []v1.PersistentVolumeAccessMode{v1.ReadWriteOnce}, want: []csiMode{snw}},
		{name: "RWO, driver with SINGLE_NODE_MULTI_WRITER", modes: []v1.PersistentVolumeAccessMode{v1.ReadWriteOnce}, singleNodeMultiWriter: true, want: []csiMode{snmw}},
		{name: "ROX", modes: []v1.PersistentVolumeAccessMode{v1.ReadOnlyMany}, want: []csiMode{mnro}},
		{name: "ROX, driver with SINGLE_NODE_MULTI_WRITER", modes: []v1.PersistentVolumeAccessMode{v1.ReadOnlyMany}, singleNodeMultiWriter: true, want: []csiMode{mnro}},
		{name: "RWX", modes: []v1.PersistentVolumeAccessMode{v1.ReadWriteMany}, want: []csiMode{mnmw}},
		{name: "RWX, driver with SINGLE_NODE_MULTI_WRITER", modes: []v1.PersistentVolumeAccessMode{v1.ReadWriteMany}, singleNodeMultiWriter: true, want: []csiMode{mnmw}},
		{name: "RWO and RWX: one capability each", modes: []v1.PersistentVolumeAccessMode{v1.ReadWriteOnce, v1.ReadWriteMany}, want: []csiMode{snw, mnmw}},
		{name: "RWX and RWO: the claim's order", modes: []v1.PersistentVolumeAccessMode{v1.ReadWriteMany, v1.ReadWriteOnce}, want: []csiMode{mnmw, snw}},
		{name: "ROX and RWO: both asked, the driver decides", modes: []v1.PersistentVolumeAccessMode{v1.ReadOnlyMany, v1.ReadWriteOnce}, want: []csiMode{mnro, snw}},
		{name: "three modes, driver with SINGLE_NODE_MULTI_WRITER", modes: []v1.PersistentVolumeAccessMode{v1.ReadWriteOnce, v1.ReadOnlyMany, v1.ReadWriteMany},
			singleNodeMultiWriter: true, want: []csiMode{snmw, mnro, mnmw}},
		{name: "RWOP", modes: []v1.PersistentVolumeAccessMode{v1.ReadWriteOncePod}, want: []csiMode{snw}},
		{name: "RWOP, driver with SINGLE_NODE_MULTI_WRITER", modes: []v1.PersistentVolumeAccessMode{v1.ReadWriteOncePod}, singleNodeMultiWriter: true, want: []csiMode{snsw}},
		// kube-apiserver refuses such claims; mapped mode by mode, as upstream.
		{name: "RWOP with another mode", modes: []v1.PersistentVolumeAccessMode{v1.ReadWriteOncePod, v1.ReadWriteOnce}, want: []csiMode{snw, snw}},
		{name: "no access modes", modes: nil, wantErr: "set spec.accessModes"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			if tc.singleNodeMultiWriter {
				e.p.ControllerCaps[csi.ControllerServiceCapability_RPC_SINGLE_NODE_MULTI_WRITER] = true
			}
			pv, state, err := e.provision(newClaim("dev", "data", withModes(tc.modes...)), newClass(nil))
			if tc.wantErr != "" {
				assertRefused(t, e, pv, state, err, tc.wantErr)
				return
			}
			assertErr(t, err, "")
			var got []csiMode
			for _, c := range e.onlyCreate(t).VolumeCapabilities {
				got = append(got, c.GetAccessMode().GetMode())
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("CSI access modes = %v, want %v", got, tc.want)
			}
			if got := pv.Spec.AccessModes; !slices.Equal(got, tc.modes) {
				t.Errorf("PV access modes = %v, want the claim's %v", got, tc.modes)
			}
		})
	}
}

func TestVolumeCapabilityAccessType(t *testing.T) {
	tests := []struct {
		name          string
		volumeMode    *v1.PersistentVolumeMode
		params        map[string]string
		mountOptions  []string
		defaultFSType string
		// modes of the claim; nil: ReadWriteOnce
		modes []v1.PersistentVolumeAccessMode
		// wantMount is nil for a block volume
		wantMount *csi.VolumeCapability_MountVolume
		// wantPVFSType is the PV's spec.csi.fsType
		wantPVFSType string
	}{
		{name: "filesystem without fstype", wantMount: &csi.VolumeCapability_MountVolume{}},
		{name: "explicit Filesystem mode", volumeMode: ptrMode(v1.PersistentVolumeFilesystem), defaultFSType: "ext4",
			wantMount: &csi.VolumeCapability_MountVolume{FsType: "ext4"}, wantPVFSType: "ext4"},
		{name: "DefaultFSType when the class has none", defaultFSType: "ext4",
			wantMount: &csi.VolumeCapability_MountVolume{FsType: "ext4"}, wantPVFSType: "ext4"},
		{name: "class fstype wins over DefaultFSType", params: map[string]string{"csi.storage.k8s.io/fstype": "xfs"}, defaultFSType: "ext4",
			wantMount: &csi.VolumeCapability_MountVolume{FsType: "xfs"}, wantPVFSType: "xfs"},
		{name: "mount options from the class", mountOptions: []string{"noatime", "nodiratime"},
			wantMount: &csi.VolumeCapability_MountVolume{MountFlags: []string{"noatime", "nodiratime"}}},
		{name: "block has no fstype", volumeMode: ptrMode(v1.PersistentVolumeBlock), params: map[string]string{"csi.storage.k8s.io/fstype": "xfs"}, defaultFSType: "ext4"},
		{name: "block has no mount flags", volumeMode: ptrMode(v1.PersistentVolumeBlock), mountOptions: []string{"noatime"}},
		{name: "every mode's capability mounts alike", modes: []v1.PersistentVolumeAccessMode{v1.ReadWriteOnce, v1.ReadOnlyMany, v1.ReadWriteMany},
			params: map[string]string{"csi.storage.k8s.io/fstype": "xfs"}, mountOptions: []string{"noatime"},
			wantMount: &csi.VolumeCapability_MountVolume{FsType: "xfs", MountFlags: []string{"noatime"}}, wantPVFSType: "xfs"},
		{name: "every mode's capability is block", modes: []v1.PersistentVolumeAccessMode{v1.ReadWriteOnce, v1.ReadWriteMany},
			volumeMode: ptrMode(v1.PersistentVolumeBlock), mountOptions: []string{"noatime"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			e.p.DefaultFSType = tc.defaultFSType
			claim := newClaim("dev", "data", func(c *v1.PersistentVolumeClaim) { c.Spec.VolumeMode = tc.volumeMode })
			if tc.modes != nil {
				withModes(tc.modes...)(claim)
			}
			class := newClass(tc.params, func(c *storagev1.StorageClass) { c.MountOptions = tc.mountOptions })
			pv, _, err := e.provision(claim, class)
			assertErr(t, err, "")
			caps := e.onlyCreate(t).VolumeCapabilities
			if len(caps) != len(claim.Spec.AccessModes) {
				t.Fatalf("got %d volume capabilities, want one per access mode (%d)", len(caps), len(claim.Spec.AccessModes))
			}
			for i, c := range caps {
				if tc.wantMount == nil {
					if c.GetBlock() == nil || c.GetMount() != nil {
						t.Errorf("capability %d = %v, want block access without mount", i, c)
					}
				} else if !proto.Equal(c.GetMount(), tc.wantMount) {
					t.Errorf("capability %d mount = %v, want %v", i, c.GetMount(), tc.wantMount)
				}
			}
			if pv.Spec.CSI.FSType != tc.wantPVFSType {
				t.Errorf("PV fsType = %q, want %q", pv.Spec.CSI.FSType, tc.wantPVFSType)
			}
			if len(pv.Spec.MountOptions) != len(tc.mountOptions) {
				t.Errorf("PV mountOptions = %v, want %v", pv.Spec.MountOptions, tc.mountOptions)
			}
			if got, want := pv.Spec.VolumeMode, tc.volumeMode; (got == nil) != (want == nil) || (got != nil && *got != *want) {
				t.Errorf("PV volumeMode = %v, want %v", got, want)
			}
		})
	}
}

func ptrMode(m v1.PersistentVolumeMode) *v1.PersistentVolumeMode { return &m }

func TestCapacityRange(t *testing.T) {
	tests := []struct {
		name    string
		claim   []func(*v1.PersistentVolumeClaim)
		want    *csi.CapacityRange
		wantErr string
	}{
		{name: "request only", want: &csi.CapacityRange{RequiredBytes: gib(1)}},
		{name: "decimal request", claim: mods(withRequest("1500M")), want: &csi.CapacityRange{RequiredBytes: 1500_000_000}},
		{name: "request and limit", claim: mods(withLimit("2Gi")), want: &csi.CapacityRange{RequiredBytes: gib(1), LimitBytes: gib(2)}},
		{name: "limit equal to request", claim: mods(withLimit("1Gi")), want: &csi.CapacityRange{RequiredBytes: gib(1), LimitBytes: gib(1)}},
		{name: "limit below request", claim: mods(withRequest("2Gi"), withLimit("1Gi")), wantErr: "limit 1Gi is smaller than its request 2Gi"},
		{name: "no storage request", claim: mods(func(c *v1.PersistentVolumeClaim) { c.Spec.Resources.Requests = nil }), wantErr: "no storage request"},
		// Quantity.Value of these is 0, negative, or clamped: none may reach the driver.
		{name: "request past int64 as decimal exponent", claim: mods(withRequest("1e30")), wantErr: "storage request 1e30 is larger than any volume CSI can create"},
		{name: "request of 2^63 bytes", claim: mods(withRequest("9223372036854775808")), wantErr: "is larger than any volume CSI can create"},
		{name: "binary request past int64", claim: mods(withRequest("1000Ei")), wantErr: "is larger than any volume CSI can create"},
		{name: "limit past int64", claim: mods(withLimit("1e30")), wantErr: "storage limit 1e30 is larger"},
		{name: "zero request", claim: mods(withRequest("0")), wantErr: "storage request 0 is not positive"},
		{name: "negative request", claim: mods(withRequest("-1Gi")), wantErr: "storage request -1Gi is not positive"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			pv, state, err := e.provision(newClaim("dev", "data", tc.claim...), newClass(nil))
			if tc.wantErr != "" {
				assertRefused(t, e, pv, state, err, tc.wantErr)
				return
			}
			assertErr(t, err, "")
			if got := e.onlyCreate(t).CapacityRange; !proto.Equal(got, tc.want) {
				t.Errorf("capacity range = %v, want %v", got, tc.want)
			}
		})
	}
}

func mods(m ...func(*v1.PersistentVolumeClaim)) []func(*v1.PersistentVolumeClaim) { return m }

func TestParameters(t *testing.T) {
	tests := []struct {
		name                string
		params              map[string]string
		extraCreateMetadata bool
		want                map[string]string
		wantErr             string
	}{
		{name: "no parameters", want: map[string]string{}},
		{name: "driver parameters pass through", params: map[string]string{"type": "ssd", "fstype": "ext4"},
			want: map[string]string{"type": "ssd", "fstype": "ext4"}},
		{name: "reserved keys removed", params: map[string]string{
			"type":                      "ssd",
			"csi.storage.k8s.io/fstype": "xfs",
			"csi.storage.k8s.io/node-publish-secret-name":           "np",
			"csi.storage.k8s.io/node-publish-secret-namespace":      "dev",
			"csi.storage.k8s.io/controller-expand-secret-name":      "ce",
			"csi.storage.k8s.io/controller-expand-secret-namespace": "dev",
		}, want: map[string]string{"type": "ssd"}},
		{name: "unknown reserved key", params: map[string]string{"type": "ssd", "csi.storage.k8s.io/fs-type": "xfs"},
			wantErr: `"csi.storage.k8s.io/fs-type" is not known`},
		{name: "extra create metadata", params: map[string]string{"type": "ssd", "csi.storage.k8s.io/fstype": "xfs"}, extraCreateMetadata: true,
			want: map[string]string{
				"type":                             "ssd",
				"csi.storage.k8s.io/pvc/name":      "data",
				"csi.storage.k8s.io/pvc/namespace": "dev",
				"csi.storage.k8s.io/pv/name":       pvName,
			}},
		{name: "extra create metadata on a class without parameters", extraCreateMetadata: true,
			want: map[string]string{
				"csi.storage.k8s.io/pvc/name":      "data",
				"csi.storage.k8s.io/pvc/namespace": "dev",
				"csi.storage.k8s.io/pv/name":       pvName,
			}},
		{name: "the class may not set the metadata keys itself", params: map[string]string{"csi.storage.k8s.io/pvc/name": "spoofed"}, extraCreateMetadata: true,
			wantErr: "csi.storage.k8s.io/pvc/name"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			e.p.ExtraCreateMetadata = tc.extraCreateMetadata
			class := newClass(tc.params)
			pv, state, err := e.provision(newClaim("dev", "data"), class)
			if tc.wantErr != "" {
				assertRefused(t, e, pv, state, err, tc.wantErr)
				return
			}
			assertErr(t, err, "")
			req := &csi.CreateVolumeRequest{Parameters: tc.want}
			if got := e.onlyCreate(t); !proto.Equal(&csi.CreateVolumeRequest{Parameters: got.Parameters}, req) {
				t.Errorf("parameters = %v, want %v", got.Parameters, tc.want)
			}
			if len(tc.params) > 0 && class.Parameters[fsTypeKey] != tc.params[fsTypeKey] {
				t.Errorf("Provision changed the StorageClass parameters: %v", class.Parameters)
			}
		})
	}
}

func TestVolumeName(t *testing.T) {
	tests := []struct {
		name       string
		prefix     string
		uuidLength int
		uid        types.UID
		want       string
		wantErr    string
	}{
		{name: "whole UID with dashes", prefix: "pvc", uuidLength: -1, uid: claimUID, want: "pvc-3a5f8a3e-1c2d-4e5f-8a9b-0c1d2e3f4a5b"},
		{name: "other prefix", prefix: "csi", uuidLength: -1, uid: claimUID, want: "csi-3a5f8a3e-1c2d-4e5f-8a9b-0c1d2e3f4a5b"},
		{name: "truncated to 8", prefix: "pvc", uuidLength: 8, uid: claimUID, want: "pvc-3a5f8a3e"},
		{name: "dashes removed before truncating", prefix: "pvc", uuidLength: 12, uid: claimUID, want: "pvc-3a5f8a3e1c2d"},
		{name: "whole UID without dashes", prefix: "pvc", uuidLength: 32, uid: claimUID, want: "pvc-3a5f8a3e1c2d4e5f8a9b0c1d2e3f4a5b"},
		{name: "longer than the UID", prefix: "pvc", uuidLength: 33, uid: claimUID, wantErr: "longer than the claim UID"},
		{name: "claim without UID", prefix: "pvc", uuidLength: -1, uid: "", wantErr: "no UID"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			e.p.VolumeNamePrefix, e.p.VolumeNameUUIDLength = tc.prefix, tc.uuidLength
			pv, state, err := e.provision(newClaim("dev", "data", withUID(tc.uid)), newClass(nil))
			if tc.wantErr != "" {
				assertRefused(t, e, pv, state, err, tc.wantErr)
				return
			}
			assertErr(t, err, "")
			if got := e.onlyCreate(t).Name; got != tc.want {
				t.Errorf("CreateVolume name = %q, want %q", got, tc.want)
			}
			if pv.Spec.CSI.VolumeHandle != "vol-"+tc.want {
				t.Errorf("PV volume handle = %q, want the driver's %q", pv.Spec.CSI.VolumeHandle, "vol-"+tc.want)
			}
		})
	}
}

func TestValidateNaming(t *testing.T) {
	tests := []struct {
		name       string
		prefix     string
		uuidLength int
		wantErr    string
	}{
		{name: "defaults", prefix: "pvc", uuidLength: -1},
		{name: "positive length", prefix: "pvc", uuidLength: 16},
		{name: "empty prefix", prefix: "", uuidLength: -1, wantErr: "--volume-name-prefix"},
		{name: "zero length", prefix: "pvc", uuidLength: 0, wantErr: "not 0"},
		{name: "below -1", prefix: "pvc", uuidLength: -2, wantErr: "not -2"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			assertErr(t, ValidateNaming(tc.prefix, tc.uuidLength), tc.wantErr)
		})
	}
}

// fakeTopology returns a fixed requirement and records the calls.
type fakeTopology struct {
	req   *csi.TopologyRequirement
	err   error
	calls []string
}

func (f *fakeTopology) Requirements(_ *storagev1.StorageClass, selected *v1.Node, claimName string) (*csi.TopologyRequirement, error) {
	node := ""
	if selected != nil {
		node = selected.Name
	}
	f.calls = append(f.calls, claimName+"@"+node)
	return f.req, f.err
}

func TestTopologyRequirements(t *testing.T) {
	zoneA := &csi.TopologyRequirement{
		Requisite: []*csi.Topology{{Segments: map[string]string{"topology.hostpath.csi/node": "node-a"}}},
		Preferred: []*csi.Topology{{Segments: map[string]string{"topology.hostpath.csi/node": "node-a"}}},
	}
	tests := []struct {
		name string
		// constraints: the driver has VOLUME_ACCESSIBILITY_CONSTRAINTS
		constraints bool
		topoErr     error
		want        *csi.TopologyRequirement
		wantCalls   int
		wantErr     string
	}{
		{name: "driver with topology", constraints: true, want: zoneA, wantCalls: 1},
		{name: "driver without topology is not asked", constraints: false, want: nil, wantCalls: 0},
		{name: "topology error", constraints: true, topoErr: errors.New(`node "node-a" has no label`), wantCalls: 1, wantErr: "topology: node"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			topo := &fakeTopology{req: zoneA, err: tc.topoErr}
			e.p.Topology = topo
			e.p.PluginCaps[csi.PluginCapability_Service_VOLUME_ACCESSIBILITY_CONSTRAINTS] = tc.constraints
			node := &v1.Node{}
			node.Name = "node-a"
			pv, state, err := e.provisionOn(newClaim("dev", "data"), newClass(nil), node)
			if len(topo.calls) != tc.wantCalls {
				t.Errorf("topology asked %d times, want %d", len(topo.calls), tc.wantCalls)
			}
			if tc.wantErr != "" {
				assertRefused(t, e, pv, state, err, tc.wantErr)
				return
			}
			assertErr(t, err, "")
			if got := e.onlyCreate(t).AccessibilityRequirements; !proto.Equal(got, tc.want) {
				t.Errorf("accessibility requirements = %v, want %v", got, tc.want)
			}
		})
	}
}
