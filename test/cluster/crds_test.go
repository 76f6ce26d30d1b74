package cluster

import (
	"os"
	"path/filepath"
	"testing"
)

func TestReadCRDsSkipsOtherKinds(t *testing.T) {
	path := filepath.Join(t.TempDir(), "crds.yaml")
	yaml := `---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.com
spec:
  group: example.com
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata:
  name: not-a-crd
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: gadgets.example.com
`
	if err := os.WriteFile(path, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	crds, err := readCRDs(path)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, c := range crds {
		names = append(names, c.Name)
	}
	if len(names) != 2 || names[0] != "widgets.example.com" || names[1] != "gadgets.example.com" {
		t.Errorf("CRDs = %v, want widgets and gadgets", names)
	}
}
