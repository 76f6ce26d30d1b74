package e2e

// The metrics endpoint serves what upstream external-provisioner v6.3.0
// serves there, beside the sidecar's own metrics.

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// With leader election and capacity on, after a claim is provisioned, the
// sidecar's /metrics has the work queues of every controller by name, the
// leader election gauge, the Go and process collectors, the capacity
// publisher's gauges and the Lease renewed on a client of its own.
func TestMetricsEndpointServesUpstreamFamilies(t *testing.T) {
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
	restartSidecar(t, "--leader-election", "--leader-election-namespace="+ns,
		"--enable-capacity", "--capacity-for-immediate-binding", "--capacity-ownerref-level=-1", "--capacity-poll-interval=1s")

	claimNS := createNamespace(t, c, "metrics")
	createClaim(t, c, newClaim(claimNS, "data", "1Mi"))
	waitBound(t, c, claimNS, "data")

	// Sample lines that must be there: family, then the start of a line.
	want := [][2]string{
		// Work queues, by name: the provisioning library's, ours.
		{"workqueue_depth", `workqueue_depth{name="claims"}`},
		{"workqueue_depth", `workqueue_depth{name="volumes"}`},
		{"workqueue_depth", `workqueue_depth{name="source-protection"}`},
		{"workqueue_depth", `workqueue_depth{name="inflight"}`},
		{"workqueue_depth", `workqueue_depth{name="csistoragecapacity"}`},
		{"workqueue_adds_total", `workqueue_adds_total{name="claims"}`},
		{"workqueue_queue_duration_seconds", `workqueue_queue_duration_seconds_count{name="claims"}`},
		{"workqueue_work_duration_seconds", `workqueue_work_duration_seconds_count{name="claims"}`},
		{"workqueue_unfinished_work_seconds", `workqueue_unfinished_work_seconds{name="claims"}`},
		{"workqueue_longest_running_processor_seconds", `workqueue_longest_running_processor_seconds{name="claims"}`},
		{"workqueue_retries_total", `workqueue_retries_total{name="claims"}`},
		// Leader election: csi-lib-utils names no lease, as upstream.
		{"leader_election_master_status", `leader_election_master_status{name=""} 1`},
		// Go runtime and process.
		{"go_goroutines", "go_goroutines "},
		{"go_memstats_alloc_bytes", "go_memstats_alloc_bytes "},
		{"process_start_time_seconds", "process_start_time_seconds "},
		{"process_cpu_seconds_total", "process_cpu_seconds_total "},
		{"process_resident_memory_bytes", "process_resident_memory_bytes "},
		// The handler's own scrapes.
		{"promhttp_metric_handler_requests_total", `promhttp_metric_handler_requests_total{code="200"}`},
		// Storage capacity.
		{"csistoragecapacities_desired_goal", "csistoragecapacities_desired_goal "},
		{"csistoragecapacities_desired_current", "csistoragecapacities_desired_current "},
		{"csistoragecapacities_obsolete", "csistoragecapacities_obsolete "},
		// The sidecar's own, with the Lease on the leader election client.
		{"csi_sidecar_operations_seconds", `csi_sidecar_operations_seconds_count{driver_name="` + driverName + `",grpc_status_code="OK",method_name="/csi.v1.Controller/GetCapacity"}`},
		{"csi_provisioner_provision_total", `csi_provisioner_provision_total{cross_namespace="false",result="success",source_kind="none"}`},
		{"csi_provisioner_kube_api_requests_total", `csi_provisioner_kube_api_requests_total{client="leader-election",resource="leases",verb="update"}`},
		{"csi_provisioner_kube_api_requests_total", `csi_provisioner_kube_api_requests_total{client="capacity",resource="csistoragecapacities",verb="create"}`},
	}
	var body string
	eventually(t, provisionWait, "every family on /metrics and capacity published", func(ctx context.Context) (bool, string, error) {
		code, b, err := sidecarGet(ctx, "/metrics")
		if err != nil || code != 200 {
			return false, fmt.Sprintf("%d %v", code, err), nil
		}
		body = b
		var missing []string
		for _, w := range want {
			if !hasFamily(body, w[0]) || !hasSample(body, w[1]) {
				missing = append(missing, w[1])
			}
		}
		if len(missing) > 0 {
			return false, "missing " + strings.Join(missing, ", "), nil
		}
		// The gauges count the published object once the poll created it.
		goal, current := sampleValue(body, "csistoragecapacities_desired_goal "), sampleValue(body, "csistoragecapacities_desired_current ")
		return goal >= 1 && current >= 1, fmt.Sprintf("capacity goal %v, current %v", goal, current), nil
	})
	if hasSample(body, `csi_provisioner_kube_api_requests_total{client="main",resource="leases"`) {
		t.Errorf("the Lease was written with the main client, want the leader election client")
	}
	t.Logf("%d metric families on /metrics", strings.Count("\n"+body, "\n# TYPE "))
}

func hasFamily(body, family string) bool {
	return strings.Contains("\n"+body, "\n# TYPE "+family+" ")
}

func hasSample(body, prefix string) bool {
	return sampleLine(body, prefix) != ""
}

func sampleLine(body, prefix string) string {
	for _, l := range strings.Split(body, "\n") {
		if strings.HasPrefix(l, prefix) {
			return l
		}
	}
	return ""
}

// sampleValue is the value of the first sample line starting with prefix,
// -1 when there is none.
func sampleValue(body, prefix string) float64 {
	l := sampleLine(body, prefix)
	v, err := strconv.ParseFloat(l[strings.LastIndex(l, " ")+1:], 64)
	if l == "" || err != nil {
		return -1
	}
	return v
}
