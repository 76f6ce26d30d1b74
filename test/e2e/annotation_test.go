package e2e

import (
	"context"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/crossns/external-provisioner/pkg/datasource"
)

// apiServerGateOff restarts kube-apiserver without the
// CrossNamespaceVolumeDataSource gate for the rest of the test, as on a
// managed cluster where alpha gates cannot be enabled, and with it afterwards.
func apiServerGateOff(t *testing.T) {
	t.Helper()
	if err := bed.SetAPIServerCrossNamespaceGate(testContext(t), false); err != nil {
		t.Fatalf("restarting kube-apiserver without the gate: %v", err)
	}
	t.Cleanup(func() {
		if err := bed.SetAPIServerCrossNamespaceGate(context.Background(), true); err != nil {
			t.Errorf("restarting kube-apiserver with the gate: %v", err)
		}
	})
}

func annotatedClaim(ns, name, source string) *corev1.PersistentVolumeClaim {
	pvc := newClaim(ns, name, "1Mi")
	pvc.Annotations = map[string]string{datasource.DataSourceAnnotation: source}
	return pvc
}

// TestAnnotationSourceWorksWithAPIServerGateOff: kube-apiserver drops
// spec.dataSourceRef.namespace without its alpha gate; the claim annotation
// provisioner.crossns.io/data-source names the source instead, and restore
// and clone then work exactly as with the field: refused without a grant,
// bound with the source's files and provenance under one.
func TestAnnotationSourceWorksWithAPIServerGateOff(t *testing.T) {
	c := requireBed(t)
	prod := createNamespace(t, c, "prod")
	dev := createNamespace(t, c, "dev")
	files := map[string]string{"orders.csv": "id,total\n1,42\n"}
	provisionSource(t, c, prod, "db", files)
	snapshotOf(t, c, prod, "nightly", "db")
	apiServerGateOff(t)

	// Why the annotation is needed: the field's namespace does not survive.
	dropped := createClaim(t, c, fromSnapshot(newClaim(dev, "via-field", "1Mi"), prod, "nightly"))
	if r := dropped.Spec.DataSourceRef; r != nil && r.Namespace != nil && *r.Namespace != "" {
		t.Fatalf("kube-apiserver without the gate kept spec.dataSourceRef.namespace %q; the test needs it dropped", *r.Namespace)
	}
	deleteClaim(t, c, dev, "via-field")

	restore := createClaim(t, c, annotatedClaim(dev, "copy", "VolumeSnapshot.snapshot.storage.k8s.io/"+prod+"/nightly"))
	requireRefused(t, c, restore, "ReferenceGrantMissing", prod, "VolumeSnapshot", "nightly")
	grant(t, c, prod, "allow-dev", dev, snapshotGroup, "VolumeSnapshot", "nightly")
	pv := waitBound(t, c, dev, "copy")
	requireFiles(t, volumeDir(pv), files)
	if got := pv.Annotations["provisioner.crossns.io/reference-grant"]; got != "allow-dev" {
		t.Errorf("PV reference-grant annotation = %q, want allow-dev", got)
	}

	grant(t, c, prod, "allow-dev-db", dev, "", "PersistentVolumeClaim", "db")
	createClaim(t, c, annotatedClaim(dev, "clone", "PersistentVolumeClaim/"+prod+"/db"))
	requireFiles(t, volumeDir(waitBound(t, c, dev, "clone")), files)
}

// TestAnnotationSourceRefusals: an annotation that cannot name a source, or
// one set next to spec.dataSource, gets a DataSourceInvalid Event saying
// what to change, and nothing reaches the driver.
func TestAnnotationSourceRefusals(t *testing.T) {
	c := requireBed(t)
	prod := createNamespace(t, c, "prod")
	dev := createNamespace(t, c, "dev")
	provisionSource(t, c, prod, "db", map[string]string{"k": "v"})
	provisionSource(t, c, dev, "local", map[string]string{"k": "v"})
	grant(t, c, prod, "allow-dev-db", dev, "", "PersistentVolumeClaim", "db")

	malformed := createClaim(t, c, annotatedClaim(dev, "malformed", prod+"/db"))
	requireRefused(t, c, malformed, "DataSourceInvalid", datasource.DataSourceAnnotation, "<Kind>.<group>/<namespace>/<name>")

	both := annotatedClaim(dev, "both", "PersistentVolumeClaim/"+prod+"/db")
	both.Spec.DataSource = &corev1.TypedLocalObjectReference{Kind: "PersistentVolumeClaim", Name: "local"}
	requireRefused(t, c, createClaim(t, c, both), "DataSourceInvalid", "both")

	// Fixing the annotation of a pending claim is honoured at the next attempt.
	fixed, err := c.kube.CoreV1().PersistentVolumeClaims(dev).Get(testContext(t), "malformed", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	fixed.Annotations[datasource.DataSourceAnnotation] = "PersistentVolumeClaim/" + prod + "/db"
	if _, err := c.kube.CoreV1().PersistentVolumeClaims(dev).Update(testContext(t), fixed, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitBound(t, c, dev, "malformed")
	deleteClaim(t, c, dev, "both")
}
