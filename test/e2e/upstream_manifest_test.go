package e2e

import (
	"os"
	"strings"
	"testing"

	"github.com/crossns/external-provisioner/test/cluster"
)

// The Kubernetes blog post on cross-namespace data sources deploys the
// sidecar with one --feature-gates flag per gate, Topology first, as many
// driver charts do. Upstream's sidecar starts with those args; so must this
// one, keeping both gates (a second --feature-gates adds to the first), and
// a cross-namespace restore must provision. (The bed's base args pass the
// cross-namespace gate already; the blog's two flags follow it.)
func TestBlogManifestFeatureGatesProvision(t *testing.T) {
	c := requireBed(t)
	restartSidecar(t, "--feature-gates=Topology=true", "--feature-gates=CrossNamespaceVolumeDataSource=true")

	start := lastSidecarStart(t)
	for _, want := range []string{"CrossNamespaceVolumeDataSource=true", "Topology=true"} {
		if !strings.Contains(start, want) {
			t.Errorf("sidecar started with %q, want feature gates including %s", start, want)
		}
	}

	prod := createNamespace(t, c, "prod")
	dev := createNamespace(t, c, "dev")
	files := map[string]string{"orders.csv": "id,total\n1,42\n"}
	provisionSource(t, c, prod, "db", files)
	snapshotOf(t, c, prod, "nightly", "db")
	grant(t, c, prod, "allow-dev", dev, snapshotGroup, "VolumeSnapshot", "nightly")

	createClaim(t, c, fromSnapshot(newClaim(dev, "copy", "1Mi"), prod, "nightly"))
	pv := waitBound(t, c, dev, "copy")
	requireFiles(t, volumeDir(pv), files)
	if got := pv.Annotations["provisioner.crossns.io/reference-grant"]; got != "allow-dev" {
		t.Errorf("PV reference-grant annotation = %q, want allow-dev", got)
	}
}

// lastSidecarStart returns the sidecar log's last "Starting csi-provisioner"
// line, which lists the feature gates in effect.
func lastSidecarStart(t *testing.T) string {
	t.Helper()
	log, err := os.ReadFile(bed.LogPath(cluster.Provisioner))
	if err != nil {
		t.Fatalf("reading the sidecar log: %v", err)
	}
	lines := strings.Split(string(log), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if strings.Contains(lines[i], `"Starting csi-provisioner"`) {
			return lines[i]
		}
	}
	t.Fatalf("no start line in the sidecar log %s", bed.LogPath(cluster.Provisioner))
	return ""
}
