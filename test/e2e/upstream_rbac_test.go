package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/crossns/external-provisioner/test/cluster"
)

// upstreamSnapshotFinalizer is the finalizer upstream external-provisioner
// (v6.1.1+) puts on a VolumeSnapshot being restored from.
const upstreamSnapshotFinalizer = "provisioner.storage.kubernetes.io/volumesnapshot-as-source-protection"

// useUpstreamRBAC binds the sidecar to upstream v6.3.0's rules for the rest
// of the test and restarts it, as a user who swapped the image but kept
// upstream's ClusterRole; deploy/kubernetes' rules and a restart afterwards.
func useUpstreamRBAC(t *testing.T) {
	t.Helper()
	if err := bed.UseProvisionerRBAC(testContext(t), cluster.RBACUpstream); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := bed.UseProvisionerRBAC(context.Background(), cluster.RBACDeploy); err != nil {
			t.Errorf("restoring deploy/kubernetes RBAC: %v", err)
		}
	})
	restartSidecar(t)
}

// TestUpstreamRBACProvisionsEveryStory: under upstream v6.3.0's ClusterRole
// and Role, unchanged (plus the ReferenceGrant rule upstream's manifest
// says to uncomment for cross-namespace sources), every story provisions:
// plain claims, same-namespace restore and clone, cross-namespace restore and
// clone; sources are protected with upstream's verbs (update, not patch) and
// released; deletion works. Our extras degrade: the sidecar says once which
// rule would add them.
func TestUpstreamRBACProvisionsEveryStory(t *testing.T) {
	c := requireBed(t)
	useUpstreamRBAC(t)

	prod := createNamespace(t, c, "prod")
	dev := createNamespace(t, c, "dev")
	files := map[string]string{"orders.csv": "id,total\n1,42\n"}
	provisionSource(t, c, prod, "db", files)
	snapshotOf(t, c, prod, "nightly", "db")

	createClaim(t, c, fromSnapshot(newClaim(prod, "restore", "1Mi"), prod, "nightly"))
	createClaim(t, c, fromClaim(newClaim(prod, "clone", "1Mi"), prod, "db"))
	grant(t, c, prod, "allow-dev", dev, snapshotGroup, "VolumeSnapshot", "nightly")
	grant(t, c, prod, "allow-dev-db", dev, "", "PersistentVolumeClaim", "db")
	createClaim(t, c, fromSnapshot(newClaim(dev, "xrestore", "1Mi"), prod, "nightly"))
	createClaim(t, c, fromClaim(newClaim(dev, "xclone", "1Mi"), prod, "db"))
	for _, cl := range []struct{ ns, name string }{{prod, "restore"}, {prod, "clone"}, {dev, "xrestore"}, {dev, "xclone"}} {
		pv := waitBound(t, c, cl.ns, cl.name)
		requireFiles(t, volumeDir(pv), files)
	}

	// Protection ended: no finalizer of ours is left on the sources.
	eventually(t, provisionWait, "the sources to be released", func(ctx context.Context) (bool, string, error) {
		src, err := c.kube.CoreV1().PersistentVolumeClaims(prod).Get(ctx, "db", metav1.GetOptions{})
		if err != nil {
			return false, err.Error(), nil
		}
		snap, err := c.snapshots.SnapshotV1().VolumeSnapshots(prod).Get(ctx, "nightly", metav1.GetOptions{})
		if err != nil {
			return false, err.Error(), nil
		}
		held := slices.Contains(src.Finalizers, protectionFinalizer) || slices.Contains(snap.Finalizers, upstreamSnapshotFinalizer)
		return !held, fmt.Sprintf("claim %v, snapshot %v", src.Finalizers, snap.Finalizers), nil
	})

	// Our extras say once which rule they need; nothing failed for a verb.
	log := sidecarLogSinceStart(t)
	for _, res := range []string{"volumesnapshotcontents", "volumeattributesclasses"} {
		said := regexp.MustCompile(`RBAC does not allow csi-provisioner to [a-z, ]+ `+res).FindAllString(log, -1)
		if len(said) != 1 {
			t.Errorf("sidecar log says %d times that %s are not cached (%q), want once", len(said), res, said)
		}
	}
	for _, bad := range []string{"is forbidden: User \"" + cluster.ProvisionerUser + "\" cannot patch", "failed to list *v1.VolumeAttributesClass", "failed to watch *v1.VolumeSnapshotContent"} {
		if strings.Contains(log, bad) {
			t.Errorf("sidecar log contains %q: a write or watch upstream's rules do not allow", bad)
		}
	}

	for _, cl := range []struct{ ns, name string }{{dev, "xrestore"}, {dev, "xclone"}, {prod, "restore"}, {prod, "clone"}} {
		deleteClaim(t, c, cl.ns, cl.name)
	}
}

// TestSnapshotWithUpstreamFinalizerIsReleased: a VolumeSnapshot left with
// upstream's source-protection finalizer (upstream's sidecar was replaced
// mid-restore, the restore then deleted) is released by ours, so its owner's
// delete completes.
func TestSnapshotWithUpstreamFinalizerIsReleased(t *testing.T) {
	c := requireBed(t)
	ns := createNamespace(t, c, "prod")
	provisionSource(t, c, ns, "db", map[string]string{"k": "v"})
	snapshotOf(t, c, ns, "nightly", "db")
	ctx := testContext(t)
	snaps := c.snapshots.SnapshotV1().VolumeSnapshots(ns)
	// What upstream's sidecar leaves behind, written as the admin.
	stopSidecarWhile(t, func() {
		snap, err := snaps.Get(ctx, "nightly", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		snap.Finalizers = append(snap.Finalizers, upstreamSnapshotFinalizer)
		if _, err := snaps.Update(ctx, snap, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		if err := snaps.Delete(ctx, "nightly", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	})
	eventually(t, provisionWait, "the snapshot to be deleted", func(ctx context.Context) (bool, string, error) {
		snap, err := snaps.Get(ctx, "nightly", metav1.GetOptions{})
		if err != nil {
			return strings.Contains(err.Error(), "not found"), err.Error(), nil
		}
		return false, fmt.Sprintf("finalizers %v", snap.Finalizers), nil
	})
}

// TestDeployManifestsPassServerSideDryRun: what deploy/kubernetes ships is
// accepted by kube-apiserver as written (schema, RBAC references, CRD kinds).
func TestDeployManifestsPassServerSideDryRun(t *testing.T) {
	requireBed(t)
	root, err := cluster.FindRepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	// The examples name namespaces ("dev", "prod") the bed does not have.
	manifests, _ := filepath.Glob(filepath.Join(root, "deploy", "kubernetes", "*.yaml"))
	if len(manifests) < 2 {
		t.Fatalf("found only %v under deploy/kubernetes", manifests)
	}
	for _, m := range manifests {
		rel, _ := filepath.Rel(root, m)
		t.Run(rel, func(t *testing.T) {
			out, err := exec.CommandContext(testContext(t), bed.KubectlPath(), "--kubeconfig="+bed.Kubeconfig(),
				"apply", "--dry-run=server", "--server-side", "--field-manager=e2e-dry-run", "-f", m).CombinedOutput()
			if err != nil {
				t.Fatalf("kubectl apply --dry-run=server -f %s: %v\n%s", rel, err, out)
			}
			t.Logf("%s", strings.TrimSpace(string(out)))
		})
	}
}

// sidecarLogSinceStart returns the sidecar log of its last start (the bed
// appends each start to one file after a line "==== <time> starting ...").
func sidecarLogSinceStart(t *testing.T) string {
	t.Helper()
	data, err := os.ReadFile(bed.LogPath(cluster.Provisioner))
	if err != nil {
		t.Fatalf("reading the sidecar log: %v", err)
	}
	log := string(data)
	if i := strings.LastIndex(log, "\n==== "); i >= 0 {
		return log[i+1:]
	}
	return log
}
