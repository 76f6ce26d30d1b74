package provisioner

import (
	"maps"
	"reflect"
	"testing"

	v1 "k8s.io/api/core/v1"
)

// TestSecretKeyPrecedence walks upstream v6.3.0's secret parameters: per
// kind the prefixed or the deprecated un-prefixed keys, else
// csi.storage.k8s.io/secret-name/-namespace; the deprecated keys also reach
// the driver.
func TestSecretKeyPrecedence(t *testing.T) {
	creds := &v1.SecretReference{Name: "creds", Namespace: "secrets"}
	data := &v1.SecretReference{Name: "data", Namespace: "dev"}
	every := func(ref *v1.SecretReference, except map[string]*v1.SecretReference) map[string]*v1.SecretReference {
		out := map[string]*v1.SecretReference{}
		for kind := range secretRefOnPV {
			out[kind] = ref
		}
		maps.Copy(out, except)
		return out
	}
	tests := []struct {
		name   string
		params map[string]string
		// want is the reference each kind ends up with on the PV (nil: none)
		want       map[string]*v1.SecretReference
		wantDriver map[string]string
		wantErr    string
	}{
		{name: "default secret serves every kind",
			params: map[string]string{"csi.storage.k8s.io/secret-name": "creds", "csi.storage.k8s.io/secret-namespace": "secrets"},
			want:   every(creds, nil), wantDriver: map[string]string{}},
		{name: "a kind's own keys win over the default",
			params: map[string]string{
				"csi.storage.k8s.io/secret-name": "creds", "csi.storage.k8s.io/secret-namespace": "secrets",
				"csi.storage.k8s.io/node-publish-secret-name": "${pvc.name}", "csi.storage.k8s.io/node-publish-secret-namespace": "${pvc.namespace}",
				"csi.storage.k8s.io/controller-modify-secret-name": "data", "csi.storage.k8s.io/controller-modify-secret-namespace": "dev",
			},
			want: every(creds, map[string]*v1.SecretReference{"node-publish": data, "controller-modify": data}), wantDriver: map[string]string{}},
		{name: "default secret templates resolve per kind",
			params: map[string]string{"csi.storage.k8s.io/secret-name": "${pvc.name}", "csi.storage.k8s.io/secret-namespace": "${pvc.namespace}"},
			want:   every(data, nil), wantDriver: map[string]string{}},
		{name: "deprecated provisioner keys, passed on to the driver",
			params:     map[string]string{"csiProvisionerSecretName": "creds", "csiProvisionerSecretNamespace": "secrets", "type": "ssd"},
			want:       every(nil, map[string]*v1.SecretReference{"provisioner": creds}),
			wantDriver: map[string]string{"csiProvisionerSecretName": "creds", "csiProvisionerSecretNamespace": "secrets", "type": "ssd"}},
		{name: "deprecated publish and stage keys",
			params: map[string]string{
				"csiControllerPublishSecretName": "creds", "csiControllerPublishSecretNamespace": "secrets",
				"csiNodeStageSecretName": "creds", "csiNodeStageSecretNamespace": "secrets",
				"csiNodePublishSecretName": "${pvc.name}", "csiNodePublishSecretNamespace": "${pvc.namespace}",
			},
			want: every(nil, map[string]*v1.SecretReference{"controller-publish": creds, "node-stage": creds, "node-publish": data}),
			wantDriver: map[string]string{
				"csiControllerPublishSecretName": "creds", "csiControllerPublishSecretNamespace": "secrets",
				"csiNodeStageSecretName": "creds", "csiNodeStageSecretNamespace": "secrets",
				"csiNodePublishSecretName": "${pvc.name}", "csiNodePublishSecretNamespace": "${pvc.namespace}",
			}},
		{name: "deprecated keys win over the default",
			params: map[string]string{
				"csi.storage.k8s.io/secret-name": "creds", "csi.storage.k8s.io/secret-namespace": "secrets",
				"csiNodeStageSecretName": "data", "csiNodeStageSecretNamespace": "dev",
			},
			want:       every(creds, map[string]*v1.SecretReference{"node-stage": data}),
			wantDriver: map[string]string{"csiNodeStageSecretName": "data", "csiNodeStageSecretNamespace": "dev"}},
		{name: "deprecated name with prefixed namespace",
			params: map[string]string{"csiProvisionerSecretName": "creds", "csi.storage.k8s.io/provisioner-secret-namespace": "secrets"},
			want:   every(nil, map[string]*v1.SecretReference{"provisioner": creds}), wantDriver: map[string]string{"csiProvisionerSecretName": "creds"}},
		{name: "kinds without deprecated keys: such a key is only a driver parameter",
			params: map[string]string{"csiControllerExpandSecretName": "creds", "csiControllerExpandSecretNamespace": "secrets"},
			want:   every(nil, nil), wantDriver: map[string]string{"csiControllerExpandSecretName": "creds", "csiControllerExpandSecretNamespace": "secrets"}},

		{name: "prefixed and deprecated name both: refused",
			params: map[string]string{
				"csi.storage.k8s.io/provisioner-secret-name": "creds", "csi.storage.k8s.io/provisioner-secret-namespace": "secrets",
				"csiProvisionerSecretName": "other",
			},
			wantErr: `provisioner secret with both "csi.storage.k8s.io/provisioner-secret-name" and the deprecated "csiProvisionerSecretName"`},
		{name: "prefixed and deprecated namespace both: refused",
			params: map[string]string{
				"csi.storage.k8s.io/node-publish-secret-name": "np", "csi.storage.k8s.io/node-publish-secret-namespace": "dev",
				"csiNodePublishSecretNamespace": "dev",
			},
			wantErr: `both "csi.storage.k8s.io/node-publish-secret-namespace" and the deprecated "csiNodePublishSecretNamespace"`},
		{name: "default name without namespace: refused", params: map[string]string{"csi.storage.k8s.io/secret-name": "creds"},
			wantErr: `only one of "csi.storage.k8s.io/secret-name" and "csi.storage.k8s.io/secret-namespace"`},
		{name: "deprecated name without namespace: refused", params: map[string]string{"csiNodeStageSecretName": "creds"},
			wantErr: `the node-stage secret needs both`},
		{name: "empty default namespace: refused",
			params:  map[string]string{"csi.storage.k8s.io/secret-name": "creds", "csi.storage.k8s.io/secret-namespace": ""},
			wantErr: "must not be empty"},
		{name: "default secret that does not resolve fails the claim",
			params:  map[string]string{"csi.storage.k8s.io/secret-name": "${pvc.annotations['x']}", "csi.storage.k8s.io/secret-namespace": "dev"},
			wantErr: `claim has no annotation "x"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, secretFixtures()...)
			pv, state, err := e.provision(newClaim("dev", "data"), newClass(tc.params))
			if tc.wantErr != "" {
				assertRefused(t, e, pv, state, err, tc.wantErr)
				return
			}
			assertErr(t, err, "")
			for kind, get := range secretRefOnPV {
				if got := get(pv); !reflect.DeepEqual(got, tc.want[kind]) {
					t.Errorf("%s secret on the PV = %v, want %v", kind, got, tc.want[kind])
				}
			}
			req := e.onlyCreate(t)
			if got := req.Parameters; !reflect.DeepEqual(got, tc.wantDriver) && len(got)+len(tc.wantDriver) > 0 {
				t.Errorf("CreateVolume parameters = %v, want %v", got, tc.wantDriver)
			}
			if tc.want["provisioner"] != nil && len(req.Secrets) == 0 {
				t.Errorf("CreateVolume got no secrets, want the provisioner secret %v", tc.want["provisioner"])
			}
		})
	}
}

// TestFSTypeKeys: the prefixed key, or upstream's deprecated un-prefixed
// "fstype" in any case (which the driver still gets), else --default-fstype.
func TestFSTypeKeys(t *testing.T) {
	tests := []struct {
		name          string
		params        map[string]string
		defaultFSType string
		want          string
		wantDriver    map[string]string
		wantErr       string
	}{
		{name: "prefixed key", params: map[string]string{"csi.storage.k8s.io/fstype": "xfs"}, want: "xfs", wantDriver: map[string]string{}},
		{name: "deprecated fstype", params: map[string]string{"fstype": "ext4"}, want: "ext4", wantDriver: map[string]string{"fstype": "ext4"}},
		{name: "deprecated fsType", params: map[string]string{"fsType": "ext4"}, want: "ext4", wantDriver: map[string]string{"fsType": "ext4"}},
		{name: "deprecated FSType", params: map[string]string{"FSType": "xfs"}, want: "xfs", wantDriver: map[string]string{"FSType": "xfs"}},
		{name: "class wins over --default-fstype", params: map[string]string{"fstype": "xfs"}, defaultFSType: "ext4",
			want: "xfs", wantDriver: map[string]string{"fstype": "xfs"}},
		{name: "--default-fstype when the class sets none", defaultFSType: "ext3", want: "ext3", wantDriver: map[string]string{}},
		{name: "neither: the driver chooses", want: "", wantDriver: map[string]string{}},
		{name: "prefixed and deprecated both: refused", params: map[string]string{"csi.storage.k8s.io/fstype": "xfs", "fstype": "ext4"},
			wantErr: `several keys ["csi.storage.k8s.io/fstype" "fstype"]`},
		{name: "two spellings of the deprecated key: refused", params: map[string]string{"fstype": "xfs", "fsType": "xfs"},
			wantErr: `several keys ["fsType" "fstype"]`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			e.p.DefaultFSType = tc.defaultFSType
			pv, state, err := e.provision(newClaim("dev", "data"), newClass(tc.params))
			if tc.wantErr != "" {
				assertRefused(t, e, pv, state, err, tc.wantErr)
				return
			}
			assertErr(t, err, "")
			req := e.onlyCreate(t)
			if got := req.VolumeCapabilities[0].GetMount().GetFsType(); got != tc.want {
				t.Errorf("CreateVolume fstype = %q, want %q", got, tc.want)
			}
			if got := pv.Spec.CSI.FSType; got != tc.want {
				t.Errorf("PV fstype = %q, want %q", got, tc.want)
			}
			if got := req.Parameters; !reflect.DeepEqual(got, tc.wantDriver) && len(got)+len(tc.wantDriver) > 0 {
				t.Errorf("CreateVolume parameters = %v, want %v", got, tc.wantDriver)
			}
		})
	}
}
