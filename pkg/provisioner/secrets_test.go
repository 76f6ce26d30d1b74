package provisioner

import (
	"reflect"
	"testing"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/sig-storage-lib-external-provisioner/v10/controller"
)

// secretRefOnPV reads, per secret kind (the infix of its StorageClass
// parameters), where the PV records it. The provisioner secret is kept as
// annotations for DeleteVolume.
var secretRefOnPV = map[string]func(*v1.PersistentVolume) *v1.SecretReference{
	"provisioner": func(pv *v1.PersistentVolume) *v1.SecretReference {
		name, ok := pv.Annotations[deletionSecretNameAnn]
		if !ok || name == "" { // empty records "no secret"
			return nil
		}
		return &v1.SecretReference{Name: name, Namespace: pv.Annotations[deletionSecretNamespaceAnn]}
	},
	"controller-publish": func(pv *v1.PersistentVolume) *v1.SecretReference { return pv.Spec.CSI.ControllerPublishSecretRef },
	"node-stage":         func(pv *v1.PersistentVolume) *v1.SecretReference { return pv.Spec.CSI.NodeStageSecretRef },
	"node-publish":       func(pv *v1.PersistentVolume) *v1.SecretReference { return pv.Spec.CSI.NodePublishSecretRef },
	"controller-expand":  func(pv *v1.PersistentVolume) *v1.SecretReference { return pv.Spec.CSI.ControllerExpandSecretRef },
	"node-expand":        func(pv *v1.PersistentVolume) *v1.SecretReference { return pv.Spec.CSI.NodeExpandSecretRef },
	// The CSI source has no field for it: annotations, as upstream v6.2.
	"controller-modify": func(pv *v1.PersistentVolume) *v1.SecretReference {
		name, ok := pv.Annotations[modifySecretNameAnn]
		if !ok {
			return nil
		}
		return &v1.SecretReference{Name: name, Namespace: pv.Annotations[modifySecretNamespaceAnn]}
	},
}

// secretParams is a StorageClass's parameters naming one secret.
func secretParams(kind, name, namespace string) map[string]string {
	return map[string]string{
		"csi.storage.k8s.io/" + kind + "-secret-name":      name,
		"csi.storage.k8s.io/" + kind + "-secret-namespace": namespace,
	}
}

func newSecret(ns, name string, data map[string]string) *v1.Secret {
	s := &v1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Data: map[string][]byte{}}
	for k, v := range data {
		s.Data[k] = []byte(v)
	}
	return s
}

// secretFixtures are the secrets the provisioner-secret cases read.
func secretFixtures() []runtime.Object {
	return []runtime.Object{
		newSecret("secrets", "creds", map[string]string{"user": "admin", "password": "s3cret"}),
		newSecret("dev", "data", map[string]string{"token": "per-claim"}),
		newSecret("secrets", pvName, map[string]string{"token": "per-volume"}),
	}
}

func TestSecretRefsOnPV(t *testing.T) {
	for _, kind := range []string{"provisioner", "controller-publish", "node-stage", "node-publish", "controller-expand", "node-expand", "controller-modify"} {
		t.Run(kind, func(t *testing.T) {
			e := newEnv(t, secretFixtures()...)
			pv, _, err := e.provision(newClaim("dev", "data"), newClass(secretParams(kind, "creds", "secrets")))
			assertErr(t, err, "")
			want := &v1.SecretReference{Name: "creds", Namespace: "secrets"}
			for k, get := range secretRefOnPV {
				switch got := get(pv); {
				case k == kind && !reflect.DeepEqual(got, want):
					t.Errorf("%s secret on the PV = %v, want %v", k, got, want)
				case k != kind && got != nil:
					t.Errorf("%s secret on the PV = %v, want none", k, got)
				}
			}
			// Only the provisioner secret is the driver's business at CreateVolume.
			gotSecrets := e.onlyCreate(t).Secrets
			if kind == "provisioner" {
				if want := map[string]string{"user": "admin", "password": "s3cret"}; !reflect.DeepEqual(gotSecrets, want) {
					t.Errorf("CreateVolume secrets = %v, want %v", gotSecrets, want)
				}
			} else if len(gotSecrets) != 0 {
				t.Errorf("CreateVolume secrets = %v, want none", gotSecrets)
			}
		})
	}
}

func TestSecretTemplates(t *testing.T) {
	const ann = "${pvc.annotations['example.com/secret']}"
	tests := []struct {
		name string
		// kind, nameTmpl and nsTmpl make the StorageClass parameters
		kind, nameTmpl, nsTmpl string
		// annotations of the claim, key/value pairs
		annotations []string
		// noName and noNamespace leave that parameter out of the class
		noName, noNamespace bool
		want                *v1.SecretReference
		wantErr             string
	}{
		{name: "pvc.name and pvc.namespace", kind: "node-publish", nameTmpl: "${pvc.name}-np", nsTmpl: "${pvc.namespace}",
			want: &v1.SecretReference{Name: "data-np", Namespace: "dev"}},
		{name: "pv.name in name and namespace", kind: "node-stage", nameTmpl: "${pv.name}", nsTmpl: "${pv.name}",
			want: &v1.SecretReference{Name: pvName, Namespace: pvName}},
		{name: "several templates in one name", kind: "controller-expand", nameTmpl: "${pvc.namespace}-${pvc.name}", nsTmpl: "secrets",
			want: &v1.SecretReference{Name: "dev-data", Namespace: "secrets"}},
		{name: "provisioner: pvc.name and pvc.namespace", kind: "provisioner", nameTmpl: "${pvc.name}", nsTmpl: "${pvc.namespace}",
			want: &v1.SecretReference{Name: "data", Namespace: "dev"}},
		{name: "provisioner: pv.name", kind: "provisioner", nameTmpl: "${pv.name}", nsTmpl: "secrets",
			want: &v1.SecretReference{Name: pvName, Namespace: "secrets"}},

		// ${pvc.annotations['k']} is allowed in every secret name, the
		// provisioner's too (upstream v5.0).
		{name: "controller-publish: annotation", kind: "controller-publish", nameTmpl: ann, nsTmpl: "${pvc.namespace}",
			annotations: []string{"example.com/secret", "mine"}, want: &v1.SecretReference{Name: "mine", Namespace: "dev"}},
		{name: "node-stage: annotation", kind: "node-stage", nameTmpl: ann, nsTmpl: "${pvc.namespace}",
			annotations: []string{"example.com/secret", "mine"}, want: &v1.SecretReference{Name: "mine", Namespace: "dev"}},
		{name: "node-publish: annotation with a suffix", kind: "node-publish", nameTmpl: ann + "-np", nsTmpl: "${pvc.namespace}",
			annotations: []string{"example.com/secret", "mine"}, want: &v1.SecretReference{Name: "mine-np", Namespace: "dev"}},
		{name: "controller-expand: annotation", kind: "controller-expand", nameTmpl: ann, nsTmpl: "${pvc.namespace}",
			annotations: []string{"example.com/secret", "mine"}, want: &v1.SecretReference{Name: "mine", Namespace: "dev"}},
		{name: "node-expand: annotation", kind: "node-expand", nameTmpl: ann, nsTmpl: "${pvc.namespace}",
			annotations: []string{"example.com/secret", "mine"}, want: &v1.SecretReference{Name: "mine", Namespace: "dev"}},
		{name: "provisioner: annotation", kind: "provisioner", nameTmpl: ann, nsTmpl: "${pvc.namespace}",
			annotations: []string{"example.com/secret", "data"}, want: &v1.SecretReference{Name: "data", Namespace: "dev"}},
		{name: "controller-modify: annotation", kind: "controller-modify", nameTmpl: ann, nsTmpl: "${pvc.namespace}",
			annotations: []string{"example.com/secret", "mine"}, want: &v1.SecretReference{Name: "mine", Namespace: "dev"}},
		{name: "provisioner: missing annotation", kind: "provisioner", nameTmpl: ann, nsTmpl: "${pvc.namespace}",
			wantErr: `provisioner secret name "${pvc.annotations['example.com/secret']}": claim has no annotation "example.com/secret"`},

		// Disallowed templates.
		{name: "missing annotation", kind: "node-publish", nameTmpl: ann, nsTmpl: "dev", wantErr: `no annotation "example.com/secret"`},
		{name: "pvc.name in a namespace", kind: "node-publish", nameTmpl: "np", nsTmpl: "${pvc.name}", wantErr: "template ${pvc.name} is not allowed"},
		{name: "annotation in a namespace", kind: "node-publish", nameTmpl: "np", nsTmpl: ann,
			annotations: []string{"example.com/secret", "dev"}, wantErr: "node-publish secret namespace"},
		{name: "unknown template", kind: "node-stage", nameTmpl: "${pvc.uid}", nsTmpl: "dev", wantErr: "template ${pvc.uid} is not allowed"},
		{name: "provisioner: unknown template", kind: "provisioner", nameTmpl: "${node.name}", nsTmpl: "dev", wantErr: "template ${node.name} is not allowed"},

		// Results that are no valid names.
		{name: "annotation value is no secret name", kind: "node-publish", nameTmpl: ann, nsTmpl: "dev",
			annotations: []string{"example.com/secret", "Not_A_Name"}, wantErr: "not a valid secret name"},
		{name: "literal namespace is no namespace name", kind: "controller-publish", nameTmpl: "cp", nsTmpl: "Secrets.NS", wantErr: "not a valid namespace name"},
		{name: "empty name", kind: "node-expand", nameTmpl: "", nsTmpl: "dev", wantErr: "must not be empty"},
		{name: "empty namespace", kind: "provisioner", nameTmpl: "creds", nsTmpl: "", wantErr: "must not be empty"},
		{name: "name empty after templating", kind: "node-publish", nameTmpl: ann, nsTmpl: "dev",
			annotations: []string{"example.com/secret", ""}, wantErr: "not a valid secret name"},

		// Name and namespace come in pairs.
		{name: "provisioner: name without namespace", kind: "provisioner", nameTmpl: "creds", noNamespace: true, wantErr: "needs both"},
		{name: "node-stage: namespace without name", kind: "node-stage", nsTmpl: "secrets", noName: true, wantErr: "needs both"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, secretFixtures()...)
			params := secretParams(tc.kind, tc.nameTmpl, tc.nsTmpl)
			if tc.noName {
				delete(params, "csi.storage.k8s.io/"+tc.kind+"-secret-name")
			}
			if tc.noNamespace {
				delete(params, "csi.storage.k8s.io/"+tc.kind+"-secret-namespace")
			}
			claim := newClaim("dev", "data", withAnnotations(tc.annotations...))
			pv, state, err := e.provision(claim, newClass(params))
			if tc.wantErr != "" {
				assertRefused(t, e, pv, state, err, tc.wantErr)
				return
			}
			assertErr(t, err, "")
			if got := secretRefOnPV[tc.kind](pv); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("%s secret on the PV = %v, want %v", tc.kind, got, tc.want)
			}
		})
	}
}

func TestProvisionerSecretRead(t *testing.T) {
	tests := []struct {
		name        string
		secrets     []runtime.Object
		nameTmpl    string
		wantSecrets map[string]string
		wantState   controller.ProvisioningState
		wantErr     string
	}{
		{name: "secret passed to CreateVolume", secrets: secretFixtures(), nameTmpl: "creds",
			wantSecrets: map[string]string{"user": "admin", "password": "s3cret"}, wantState: controller.ProvisioningFinished},
		{name: "templated secret passed to CreateVolume", secrets: secretFixtures(), nameTmpl: "${pv.name}",
			wantSecrets: map[string]string{"token": "per-volume"}, wantState: controller.ProvisioningFinished},
		{name: "empty secret", secrets: []runtime.Object{newSecret("secrets", "creds", nil)}, nameTmpl: "creds",
			wantSecrets: map[string]string{}, wantState: controller.ProvisioningFinished},
		{name: "missing secret: no volume, retried", nameTmpl: "creds",
			wantState: controller.ProvisioningNoChange, wantErr: "reading provisioner secret secrets/creds"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, tc.secrets...)
			pv, state, err := e.provision(newClaim("dev", "data"), newClass(secretParams("provisioner", tc.nameTmpl, "secrets")))
			assertErr(t, err, tc.wantErr)
			if state != tc.wantState {
				t.Errorf("state = %s, want %s", state, tc.wantState)
			}
			if tc.wantErr != "" {
				if pv != nil || isIgnored(err) {
					t.Errorf("got PV %v, ignored %v; want no PV and a reported error", pv, isIgnored(err))
				}
				e.assertNoCreate(t)
				return
			}
			if got := e.onlyCreate(t).Secrets; !reflect.DeepEqual(got, tc.wantSecrets) && len(got)+len(tc.wantSecrets) > 0 {
				t.Errorf("CreateVolume secrets = %v, want %v", got, tc.wantSecrets)
			}
			// The PV remembers the secret so DeleteVolume gets it after the claim is gone.
			if got := secretRefOnPV["provisioner"](pv); got == nil || got.Namespace != "secrets" {
				t.Errorf("deletion secret annotations = %v, want the provisioner secret in namespace secrets", got)
			}
		})
	}
}
