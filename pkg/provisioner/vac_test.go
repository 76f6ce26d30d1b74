package provisioner

import (
	"maps"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	v1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	storagelisters "k8s.io/client-go/listers/storage/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/sig-storage-lib-external-provisioner/v10/controller"
)

// TestVolumeAttributesClass covers a claim naming a VolumeAttributesClass:
// the class's parameters reach CreateVolume as mutable_parameters and the PV
// carries the class (so the PV controller binds it), under upstream
// v6.3.0's rules (vac.go).
func TestVolumeAttributesClass(t *testing.T) {
	gold := newVAC("gold", driverName, map[string]string{"iops": "3000", "throughput": "125"})
	tests := []struct {
		name string
		// claimClass is the claim's spec.volumeAttributesClassName ("": none).
		claimClass string
		// modify: the driver reports MODIFY_VOLUME.
		modify bool
		// gateOff: the VolumeAttributesClass gate is off (no lister).
		gateOff bool
		// cached classes are in the informer cache, served ones only in
		// kube-apiserver (created a moment ago, or RBAC without list/watch).
		cached, served []*storagev1.VolumeAttributesClass

		wantState  controller.ProvisioningState
		wantErr    string
		wantParams map[string]string // CreateVolume's mutable_parameters; nil: no call expected when wantErr is set
		wantPVVAC  *string
	}{
		{name: "parameters passed, PV carries the class", claimClass: "gold", modify: true, cached: vacs(gold),
			wantState: controller.ProvisioningFinished, wantParams: gold.Parameters, wantPVVAC: ptr.To("gold")},
		{name: "class not in the cache yet is read from the API", claimClass: "gold", modify: true, served: vacs(gold),
			wantState: controller.ProvisioningFinished, wantParams: gold.Parameters, wantPVVAC: ptr.To("gold")},
		{name: "class of another driver refused", claimClass: "other", modify: true,
			cached:    vacs(newVAC("other", "ebs.csi.aws.com", map[string]string{"iops": "1"})),
			wantState: controller.ProvisioningFinished,
			wantErr:   `VolumeAttributesClass "other" is for CSI driver "ebs.csi.aws.com", but the claim's StorageClass provisions with "` + driverName + `"`},
		{name: "driver without MODIFY_VOLUME refused", claimClass: "gold", cached: vacs(gold),
			wantState: controller.ProvisioningFinished,
			wantErr:   "does not report the controller MODIFY_VOLUME capability"},
		{name: "missing class retried", claimClass: "gold", modify: true,
			wantState: controller.ProvisioningNoChange,
			wantErr:   `VolumeAttributesClass "gold" named by the claim does not exist; provisioning is retried until it is created`},
		{name: "gate off ignores the class", claimClass: "gold", modify: true, gateOff: true, cached: vacs(gold),
			wantState: controller.ProvisioningFinished},
		{name: "gate off ignores a missing class and a driver without MODIFY_VOLUME", claimClass: "gold", gateOff: true,
			wantState: controller.ProvisioningFinished},
		{name: "claim without a class", modify: true, cached: vacs(gold),
			wantState: controller.ProvisioningFinished},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var served []runtime.Object
			for _, c := range tc.served {
				served = append(served, c)
			}
			e := newEnv(t, served...)
			if !tc.gateOff {
				indexer := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
				for _, c := range tc.cached {
					if err := indexer.Add(c); err != nil {
						t.Fatal(err)
					}
				}
				e.p.VolumeAttributesClasses = storagelisters.NewVolumeAttributesClassLister(indexer)
			}
			if tc.modify {
				e.p.ControllerCaps[csi.ControllerServiceCapability_RPC_MODIFY_VOLUME] = true
			}
			claim := newClaim("dev", "data")
			if tc.claimClass != "" {
				claim.Spec.VolumeAttributesClassName = ptr.To(tc.claimClass)
			}

			pv, state, err := e.provision(claim, newClass(nil))

			assertErr(t, err, tc.wantErr)
			if state != tc.wantState {
				t.Errorf("state %q, want %q", state, tc.wantState)
			}
			if isIgnored(err) {
				t.Errorf("error is an IgnoredError: the loop would record no ProvisioningFailed Event")
			}
			// The loop records the error as ProvisioningFailed; the
			// provisioner itself adds nothing.
			e.assertEvents(t)
			if tc.wantErr != "" {
				e.assertNoCreate(t)
				if pv != nil {
					t.Errorf("got PV %s for a refused claim", pv.Name)
				}
				return
			}
			req := e.onlyCreate(t)
			if !maps.Equal(req.MutableParameters, tc.wantParams) {
				t.Errorf("mutable_parameters %v, want %v", req.MutableParameters, tc.wantParams)
			}
			if (tc.wantParams == nil) != (req.MutableParameters == nil) {
				t.Errorf("mutable_parameters %#v, want %#v", req.MutableParameters, tc.wantParams)
			}
			if got := pv.Spec.VolumeAttributesClassName; !equalPtr(got, tc.wantPVVAC) {
				t.Errorf("PV volumeAttributesClassName %v, want %v", deref(got), deref(tc.wantPVVAC))
			}
		})
	}
}

// TestVolumeAttributesClassParametersNotShared checks that the request does
// not alias the cached class: the request is kept in the in-flight record
// and the class belongs to the informer cache.
func TestVolumeAttributesClassParametersNotShared(t *testing.T) {
	gold := newVAC("gold", driverName, map[string]string{"iops": "3000"})
	e := newEnv(t)
	indexer := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
	if err := indexer.Add(gold); err != nil {
		t.Fatal(err)
	}
	e.p.VolumeAttributesClasses = storagelisters.NewVolumeAttributesClassLister(indexer)
	e.p.ControllerCaps[csi.ControllerServiceCapability_RPC_MODIFY_VOLUME] = true
	e.csi.script = []createFunc{func(req *csi.CreateVolumeRequest) (*csi.CreateVolumeResponse, error) {
		req.MutableParameters["iops"] = "changed by someone holding the request"
		return createOK()(req)
	}}
	claim := newClaim("dev", "data", func(c *v1.PersistentVolumeClaim) { c.Spec.VolumeAttributesClassName = ptr.To("gold") })
	if _, _, err := e.provision(claim, newClass(nil)); err != nil {
		t.Fatal(err)
	}
	if got := gold.Parameters["iops"]; got != "3000" {
		t.Errorf("cached class's parameter changed to %q", got)
	}
}

func newVAC(name, driver string, params map[string]string) *storagev1.VolumeAttributesClass {
	return &storagev1.VolumeAttributesClass{
		TypeMeta:   metav1.TypeMeta{Kind: "VolumeAttributesClass", APIVersion: "storage.k8s.io/v1"},
		ObjectMeta: metav1.ObjectMeta{Name: name},
		DriverName: driver,
		Parameters: params,
	}
}

func vacs(c ...*storagev1.VolumeAttributesClass) []*storagev1.VolumeAttributesClass { return c }

func equalPtr(a, b *string) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

func deref(s *string) string {
	if s == nil {
		return "<nil>"
	}
	return *s
}
