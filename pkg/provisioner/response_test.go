package provisioner

import (
	"reflect"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	v1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/sig-storage-lib-external-provisioner/v10/controller"
)

func TestCreateVolumeResponse(t *testing.T) {
	name := "pvc-" + string(claimUID)
	tests := []struct {
		name string
		// answer is the driver's answer to CreateVolume
		answer createFunc
		// claim and class modifiers
		claim    []func(*v1.PersistentVolumeClaim)
		class    func(*storagev1.StorageClass)
		readOnly bool // --controller-publish-readonly
		// topology: the driver has topology and the Topology gate is on
		topology bool
		// objects preloaded (a data source)
		objects []runtime.Object

		wantErr     string
		wantDeletes []string
		// checks on the PV when there is no error
		wantCapacity  string
		wantAttrs     map[string]string
		wantAffinity  *v1.VolumeNodeAffinity
		wantReclaim   v1.PersistentVolumeReclaimPolicy
		wantReadOnly  bool
		wantSourceAnn bool
	}{
		{name: "capacity 0 means the requested size", answer: createWith(func(v *csi.Volume) { v.CapacityBytes = 0 }),
			wantCapacity: "1Gi", wantAttrs: map[string]string{IdentityAttribute: identity}, wantReclaim: v1.PersistentVolumeReclaimDelete},
		{name: "exact capacity", answer: createOK(),
			wantCapacity: "1Gi", wantAttrs: map[string]string{IdentityAttribute: identity}, wantReclaim: v1.PersistentVolumeReclaimDelete},
		{name: "larger capacity is what the PV offers", answer: createWith(func(v *csi.Volume) { v.CapacityBytes = gib(2) }),
			wantCapacity: "2Gi", wantAttrs: map[string]string{IdentityAttribute: identity}, wantReclaim: v1.PersistentVolumeReclaimDelete},
		{name: "smaller capacity: volume deleted", answer: createWith(func(v *csi.Volume) { v.CapacityBytes = gib(1) / 2 }),
			wantErr: "smaller than the requested 1Gi; the volume was deleted", wantDeletes: []string{"vol-" + name}},
		{name: "volume context becomes volume attributes", answer: createWith(func(v *csi.Volume) {
			v.VolumeContext = map[string]string{"pool": "fast", "kind": "file"}
		}), wantCapacity: "1Gi", wantAttrs: map[string]string{"pool": "fast", "kind": "file", IdentityAttribute: identity}, wantReclaim: v1.PersistentVolumeReclaimDelete},
		{name: "accessible topology becomes node affinity", topology: true, answer: createWith(func(v *csi.Volume) {
			v.AccessibleTopology = []*csi.Topology{
				{Segments: map[string]string{"topology.hostpath.csi/node": "node-a", "zone": "z1"}},
				{Segments: map[string]string{"topology.hostpath.csi/node": "node-b"}},
			}
		}), wantCapacity: "1Gi", wantAttrs: map[string]string{IdentityAttribute: identity}, wantReclaim: v1.PersistentVolumeReclaimDelete,
			wantAffinity: &v1.VolumeNodeAffinity{Required: &v1.NodeSelector{NodeSelectorTerms: []v1.NodeSelectorTerm{
				{MatchExpressions: []v1.NodeSelectorRequirement{
					{Key: "topology.hostpath.csi/node", Operator: v1.NodeSelectorOpIn, Values: []string{"node-a"}},
					{Key: "zone", Operator: v1.NodeSelectorOpIn, Values: []string{"z1"}},
				}},
				{MatchExpressions: []v1.NodeSelectorRequirement{
					{Key: "topology.hostpath.csi/node", Operator: v1.NodeSelectorOpIn, Values: []string{"node-b"}},
				}},
			}}}},
		{name: "no node affinity without topology (Topology gate off)", answer: createWith(func(v *csi.Volume) {
			v.AccessibleTopology = []*csi.Topology{{Segments: map[string]string{"zone": "z1"}}}
		}), wantCapacity: "1Gi", wantAttrs: map[string]string{IdentityAttribute: identity}, wantReclaim: v1.PersistentVolumeReclaimDelete},
		{name: "driver ignored the content source: volume deleted", answer: createWith(func(v *csi.Volume) { v.ContentSource = nil }),
			claim:   mods(fromSnapshot("", "nightly")),
			objects: []runtime.Object{readySnapshot("dev", "nightly", "content-1", "1Gi"), boundContent("content-1", "dev", "nightly", "snap-1")},
			wantErr: "without the requested data source; the volume was deleted", wantDeletes: []string{"vol-" + name}},
		{name: "content source echoed: provenance recorded", answer: createOK(),
			claim:        mods(fromSnapshot("", "nightly")),
			objects:      []runtime.Object{readySnapshot("dev", "nightly", "content-1", "1Gi"), boundContent("content-1", "dev", "nightly", "snap-1")},
			wantCapacity: "1Gi", wantAttrs: map[string]string{IdentityAttribute: identity}, wantReclaim: v1.PersistentVolumeReclaimDelete, wantSourceAnn: true},
		{name: "no volume in the response", answer: func(*csi.CreateVolumeRequest) (*csi.CreateVolumeResponse, error) {
			return &csi.CreateVolumeResponse{}, nil
		}, wantErr: "driver returned no volume"},
		{name: "volume without ID", answer: createWith(func(v *csi.Volume) { v.VolumeId = "" }), wantErr: "driver returned no volume"},
		{name: "class reclaim policy Retain", answer: createOK(),
			class:        func(c *storagev1.StorageClass) { c.ReclaimPolicy = ptrReclaim(v1.PersistentVolumeReclaimRetain) },
			wantCapacity: "1Gi", wantAttrs: map[string]string{IdentityAttribute: identity}, wantReclaim: v1.PersistentVolumeReclaimRetain},
		{name: "ReadOnly: ROX only with --controller-publish-readonly", answer: createOK(), readOnly: true,
			claim:        mods(withModes(v1.ReadOnlyMany)),
			wantCapacity: "1Gi", wantAttrs: map[string]string{IdentityAttribute: identity}, wantReclaim: v1.PersistentVolumeReclaimDelete, wantReadOnly: true},
		{name: "not ReadOnly: ROX without --controller-publish-readonly", answer: createOK(),
			claim:        mods(withModes(v1.ReadOnlyMany)),
			wantCapacity: "1Gi", wantAttrs: map[string]string{IdentityAttribute: identity}, wantReclaim: v1.PersistentVolumeReclaimDelete},
		{name: "not ReadOnly: RWX with --controller-publish-readonly", answer: createOK(), readOnly: true,
			claim:        mods(withModes(v1.ReadWriteMany)),
			wantCapacity: "1Gi", wantAttrs: map[string]string{IdentityAttribute: identity}, wantReclaim: v1.PersistentVolumeReclaimDelete},
		{name: "not ReadOnly: RWO with --controller-publish-readonly", answer: createOK(), readOnly: true,
			wantCapacity: "1Gi", wantAttrs: map[string]string{IdentityAttribute: identity}, wantReclaim: v1.PersistentVolumeReclaimDelete},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, tc.objects...)
			e.csi.script = []createFunc{tc.answer}
			e.p.ControllerPublishReadOnly = tc.readOnly
			if tc.topology {
				e.p.Topology = &fakeTopology{}
			}
			class := newClass(map[string]string{"type": "ssd"})
			if tc.class != nil {
				tc.class(class)
			}
			claim := newClaim("dev", "data", tc.claim...)
			pv, state, err := e.provision(claim, class)
			if state != controller.ProvisioningFinished {
				t.Errorf("state = %s, want %s", state, controller.ProvisioningFinished)
			}
			if got := e.csi.deletedIDs(); !reflect.DeepEqual(got, tc.wantDeletes) {
				t.Errorf("DeleteVolume calls = %v, want %v", got, tc.wantDeletes)
			}
			e.onlyCreate(t)
			assertErr(t, err, tc.wantErr)
			if tc.wantErr != "" {
				if pv != nil || isIgnored(err) {
					t.Errorf("got PV %v, ignored %v; want no PV and a reported error", pv, isIgnored(err))
				}
				return
			}
			if pv.Name != name {
				t.Errorf("PV name = %q, want %q", pv.Name, name)
			}
			if got := pv.Spec.Capacity[v1.ResourceStorage]; got.Cmp(resource.MustParse(tc.wantCapacity)) != 0 {
				t.Errorf("PV capacity = %s, want %s", got.String(), tc.wantCapacity)
			}
			csiSrc := pv.Spec.CSI
			if csiSrc == nil || csiSrc.Driver != driverName || csiSrc.VolumeHandle != "vol-"+name {
				t.Fatalf("PV CSI source = %+v, want driver %s and handle vol-%s", csiSrc, driverName, name)
			}
			if !reflect.DeepEqual(csiSrc.VolumeAttributes, tc.wantAttrs) {
				t.Errorf("PV volume attributes = %v, want %v", csiSrc.VolumeAttributes, tc.wantAttrs)
			}
			if !reflect.DeepEqual(pv.Spec.NodeAffinity, tc.wantAffinity) {
				t.Errorf("PV node affinity = %v, want %v", pv.Spec.NodeAffinity, tc.wantAffinity)
			}
			if pv.Spec.PersistentVolumeReclaimPolicy != tc.wantReclaim {
				t.Errorf("PV reclaim policy = %s, want %s", pv.Spec.PersistentVolumeReclaimPolicy, tc.wantReclaim)
			}
			if csiSrc.ReadOnly != tc.wantReadOnly {
				t.Errorf("PV readOnly = %v, want %v", csiSrc.ReadOnly, tc.wantReadOnly)
			}
			// "No deletion secret" is recorded too, as the upstream sidecar does.
			wantAnn := map[string]string{deletionSecretNameAnn: "", deletionSecretNamespaceAnn: ""}
			if tc.wantSourceAnn {
				wantAnn[SourceNamespaceAnnotation] = "dev"
				wantAnn[SourceKindAnnotation] = "VolumeSnapshot"
				wantAnn[SourceNameAnnotation] = "nightly"
			}
			if !reflect.DeepEqual(pv.Annotations, wantAnn) {
				t.Errorf("PV annotations = %v, want %v", pv.Annotations, wantAnn)
			}
		})
	}
}

func ptrReclaim(p v1.PersistentVolumeReclaimPolicy) *v1.PersistentVolumeReclaimPolicy { return &p }
