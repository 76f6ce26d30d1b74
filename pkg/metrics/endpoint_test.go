package metrics

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/component-base/metrics/legacyregistry"
)

// TestHandler scrapes the metrics endpoint as main wires it, after a named
// work queue did some work and a leader elector (fake clientset) took its
// Lease, and checks that every family upstream external-provisioner serves
// is there with the labels it has upstream, beside the sidecar's own.
func TestHandler(t *testing.T) {
	csiMetrics := NewCSIMetricsManager()
	csiMetrics.SetDriverName("test.csi.example.com")
	reg := csiMetrics.GetRegistry()
	api := NewAPIRequests(reg)
	rt := api.Wrap(ClientLeaderElection)(roundTripper(func(*http.Request) (*http.Response, error) {
		return &http.Response{StatusCode: http.StatusOK, Body: http.NoBody}, nil
	}))
	req := httptest.NewRequest(http.MethodPut, "https://apiserver/apis/coordination.k8s.io/v1/namespaces/default/leases/test-lease", nil)
	if _, err := rt.RoundTrip(req); err != nil {
		t.Fatal(err)
	}
	csiMetrics.RecordMetrics("/csi.v1.Controller/CreateVolume", nil, time.Second)

	// A queue created after this package's init records, by name.
	q := workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](),
		workqueue.TypedRateLimitingQueueConfig[string]{Name: "test-queue"})
	defer q.ShutDown()
	q.Add("a")
	item, _ := q.Get()
	q.AddRateLimited(item) // a retry
	q.Done(item)

	// A leader elector records whether it leads, by lease name.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	lock, err := resourcelock.New(resourcelock.LeasesResourceLock, "default", "test-lease",
		nil, fake.NewClientset().CoordinationV1(), resourcelock.ResourceLockConfig{Identity: "me"})
	if err != nil {
		t.Fatal(err)
	}
	leading := make(chan struct{})
	le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
		Lock: lock, Name: "test-lease", LeaseDuration: 15 * time.Second, RenewDeadline: 10 * time.Second, RetryPeriod: time.Second,
		ReleaseOnCancel: true,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(context.Context) { close(leading) },
			OnStoppedLeading: func() {},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	stopped := make(chan struct{})
	go func() { defer close(stopped); le.Run(ctx) }()
	defer func() { cancel(); <-stopped }()
	select {
	case <-leading:
	case <-time.After(30 * time.Second):
		t.Fatal("the leader elector did not take the Lease")
	}

	// No two gatherers serve one family: the scrape would fail.
	if _, err := (prometheus.Gatherers{legacyregistry.DefaultGatherer, reg}).Gather(); err != nil {
		t.Fatalf("gathering the legacy registry and the sidecar's: %v", err)
	}

	srv := httptest.NewServer(Handler(reg))
	defer srv.Close()
	scrape := func() string {
		resp, err := http.Get(srv.URL)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("scrape: %d %v", resp.StatusCode, err)
		}
		return string(body)
	}
	scrape()
	body := scrape() // the handler counts the first scrape

	tests := []struct {
		family string
		sample string // the start of one of its sample lines
	}{
		// Work queues (upstream: component-base workqueue provider).
		{"workqueue_depth", `workqueue_depth{name="test-queue"} `},
		{"workqueue_adds_total", `workqueue_adds_total{name="test-queue"} `},
		{"workqueue_queue_duration_seconds", `workqueue_queue_duration_seconds_count{name="test-queue"} `},
		{"workqueue_work_duration_seconds", `workqueue_work_duration_seconds_count{name="test-queue"} `},
		{"workqueue_unfinished_work_seconds", `workqueue_unfinished_work_seconds{name="test-queue"} `},
		{"workqueue_longest_running_processor_seconds", `workqueue_longest_running_processor_seconds{name="test-queue"} `},
		{"workqueue_retries_total", `workqueue_retries_total{name="test-queue"} 1`},
		// Leader election (upstream: component-base leaderelection provider).
		{"leader_election_master_status", `leader_election_master_status{name="test-lease"} 1`},
		// Go runtime and process (component-base legacy registry).
		{"go_goroutines", "go_goroutines "},
		{"go_memstats_alloc_bytes", "go_memstats_alloc_bytes "},
		{"go_gc_duration_seconds", "go_gc_duration_seconds"},
		{"process_start_time_seconds", "process_start_time_seconds "},
		{"process_cpu_seconds_total", "process_cpu_seconds_total "},
		{"process_resident_memory_bytes", "process_resident_memory_bytes "},
		// The legacy registry's own meta metrics.
		{"registered_metrics_total", "registered_metrics_total{"},
		// Scrapes of the handler itself.
		{"promhttp_metric_handler_requests_total", `promhttp_metric_handler_requests_total{code="200"} 1`},
		{"promhttp_metric_handler_requests_in_flight", "promhttp_metric_handler_requests_in_flight 1"},
		// The sidecar's registry: CSI calls and its own metrics.
		{"csi_sidecar_operations_seconds", `csi_sidecar_operations_seconds_count{driver_name="test.csi.example.com",grpc_status_code="OK",method_name="/csi.v1.Controller/CreateVolume"} 1`},
		{"csi_provisioner_kube_api_requests_total", `csi_provisioner_kube_api_requests_total{client="leader-election",resource="leases",verb="update"} 1`},
	}
	for _, tc := range tests {
		t.Run(tc.family, func(t *testing.T) {
			if n := strings.Count("\n"+body, "\n# TYPE "+tc.family+" "); n != 1 {
				t.Errorf("%d families %s, want 1", n, tc.family)
			}
			if !hasLinePrefix(body, tc.sample) {
				t.Errorf("no sample %q", tc.sample)
			}
		})
	}
}

func hasLinePrefix(body, prefix string) bool {
	for _, l := range strings.Split(body, "\n") {
		if strings.HasPrefix(l, prefix) {
			return true
		}
	}
	return false
}
