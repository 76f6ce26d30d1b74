package e2e

// The sidecar's operational surface: preflight, metrics, leader election.

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// sidecarGet returns the status and body of a GET on the sidecar's HTTP endpoint.
func sidecarGet(ctx context.Context, path string) (int, string, error) {
	base := strings.TrimSuffix(bed.ProvisionerMetricsURL(), "/metrics")
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+path, nil)
	if err != nil {
		return 0, "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}

// With the gate on, the sidecar checked at start that kube-apiserver keeps
// dataSourceRef.namespace (the bed's does), and said so.
func TestPreflightConfirmsAPIServerGate(t *testing.T) {
	requireBed(t)
	eventually(t, provisionWait, "the preflight result in the sidecar's log", func(context.Context) (bool, string, error) {
		log, err := os.ReadFile(bed.LogPath("csi-provisioner"))
		if err != nil {
			return false, err.Error(), nil
		}
		if strings.Contains(string(log), "drops spec.dataSourceRef.namespace") {
			return false, "", fmt.Errorf("preflight reported the API server gate off on a bed that has it on")
		}
		return strings.Contains(string(log), "kube-apiserver keeps spec.dataSourceRef.namespace"), "no preflight line yet", nil
	})
}

// After a cross-namespace restore, /metrics counts it by source kind and
// namespace crossing, and API requests by verb and resource.
func TestMetricsCountCrossNamespaceProvisioning(t *testing.T) {
	c := requireBed(t)
	prod := createNamespace(t, c, "prod")
	dev := createNamespace(t, c, "dev")
	provisionSource(t, c, prod, "db", map[string]string{"a": "b"})
	snapshotOf(t, c, prod, "nightly", "db")
	grant(t, c, prod, "allow", dev, snapshotGroup, "VolumeSnapshot", "")
	createClaim(t, c, fromSnapshot(newClaim(dev, "copy", "1Mi"), prod, "nightly"))
	waitBound(t, c, dev, "copy")

	_, body, err := sidecarGet(testContext(t), "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`csi_provisioner_provision_total{cross_namespace="true",result="success",source_kind="VolumeSnapshot"}`,
		`csi_provisioner_kube_api_requests_total{client="main",resource="persistentvolumes",verb="create"}`,
		`csi_provisioner_kube_api_requests_total{client="events",resource="events",verb="create"}`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics has no %s", want)
		}
	}
}

// With --leader-election the sidecar takes a Lease (with the RBAC of
// deploy/kubernetes) and serves /healthz/leader-election.
func TestLeaderElection(t *testing.T) {
	c := requireBed(t)
	restartSidecar(t, "--leader-election", "--leader-election-namespace=default")
	eventually(t, provisionWait, "a Lease held by the sidecar", func(ctx context.Context) (bool, string, error) {
		leases, err := c.kube.CoordinationV1().Leases("default").List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err.Error(), nil
		}
		for _, l := range leases.Items {
			if strings.Contains(l.Name, "crossns") && l.Spec.HolderIdentity != nil && *l.Spec.HolderIdentity != "" {
				return true, "", nil
			}
		}
		return false, fmt.Sprintf("%d leases, none held for the driver", len(leases.Items)), nil
	})
	eventually(t, provisionWait, "/healthz/leader-election to answer 200", func(ctx context.Context) (bool, string, error) {
		code, body, err := sidecarGet(ctx, "/healthz/leader-election")
		if err != nil {
			return false, err.Error(), nil
		}
		return code == http.StatusOK, fmt.Sprintf("%d %s", code, body), nil
	})
	// And it provisions as leader.
	ns := createNamespace(t, c, "leader")
	createClaim(t, c, newClaim(ns, "data", "1Mi"))
	waitBound(t, c, ns, "data")
}

// With --enable-capacity the sidecar publishes the driver's capacity per
// StorageClass as CSIStorageCapacity objects, and follows it as volumes use it.
func TestStorageCapacityPublished(t *testing.T) {
	c := requireBed(t)
	ctx := testContext(t)
	// The bed may predate the capacity rules of deploy/kubernetes/rbac.yaml.
	if err := bed.ApplyProvisionerRBAC(ctx); err != nil {
		t.Fatal(err)
	}
	const ns = "default"
	selector := "csi.storage.k8s.io/drivername=" + driverName
	t.Cleanup(func() {
		// Without an owner (level -1) nothing garbage-collects them.
		_ = c.kube.StorageV1().CSIStorageCapacities(ns).DeleteCollection(context.Background(), metav1.DeleteOptions{}, metav1.ListOptions{LabelSelector: selector})
	})
	t.Setenv("NAMESPACE", ns)
	restartSidecar(t, "--enable-capacity", "--capacity-for-immediate-binding", "--capacity-ownerref-level=-1", "--capacity-poll-interval=1s")

	published := func(ctx context.Context) (int64, string, error) {
		list, err := c.kube.StorageV1().CSIStorageCapacities(ns).List(ctx, metav1.ListOptions{LabelSelector: selector})
		if err != nil {
			return 0, "", err
		}
		for _, sc := range list.Items {
			if sc.StorageClassName == testClass && sc.Capacity != nil {
				return sc.Capacity.Value(), sc.Name, nil
			}
		}
		return -1, fmt.Sprintf("%d objects, none for %s", len(list.Items), testClass), nil
	}
	var before int64
	eventually(t, provisionWait, "a CSIStorageCapacity for "+testClass, func(ctx context.Context) (bool, string, error) {
		v, state, err := published(ctx)
		before = v
		return err == nil && v > 0, state, nil
	})

	claimNS := createNamespace(t, c, "capacity")
	createClaim(t, c, newClaim(claimNS, "big", "64Mi"))
	waitBound(t, c, claimNS, "big")
	eventually(t, provisionWait, "published capacity to drop by the new volume", func(ctx context.Context) (bool, string, error) {
		v, _, err := published(ctx)
		return err == nil && v <= before-64<<20, fmt.Sprintf("capacity %d, was %d", v, before), nil
	})
}
