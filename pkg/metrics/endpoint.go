package metrics

import (
	"fmt"
	"net/http"

	csimetrics "github.com/kubernetes-csi/csi-lib-utils/metrics"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	k8smetrics "k8s.io/component-base/metrics"
	"k8s.io/component-base/metrics/legacyregistry"
	"k8s.io/klog/v2"

	// Importing these packages installs component-base's metrics providers
	// in client-go, as upstream external-provisioner does: every named work
	// queue (workqueue_* with a "name" label) and every leader elector
	// (leader_election_master_status, leader_election_slowpath_total)
	// records into the legacy registry. A queue records only when it is
	// created after the provider is installed, which importing this package
	// guarantees for everything main creates.
	_ "k8s.io/component-base/metrics/prometheus/clientgo/leaderelection"
	_ "k8s.io/component-base/metrics/prometheus/workqueue"
)

// Handler serves on the metrics path what upstream external-provisioner
// serves there: component-base's legacy registry (work queues, leader
// election, the Go runtime and process collectors, the registry's own
// meta metrics), the given gatherers (the CSI metrics manager's registry
// with the sidecar's own metrics) and promhttp's count of scrapes of this
// handler. A gatherer that fails, e.g. two registries serving the same
// family, is logged and the rest is still served.
func Handler(gatherers ...prometheus.Gatherer) http.Handler {
	self := prometheus.NewRegistry()
	all := prometheus.Gatherers{legacyregistry.DefaultGatherer}
	all = append(all, gatherers...)
	all = append(all, self)
	return promhttp.InstrumentMetricHandler(self, promhttp.HandlerFor(all, promhttp.HandlerOpts{
		ErrorLog:      errorLog{},
		ErrorHandling: promhttp.ContinueOnError,
	}))
}

// NewCSIMetricsManager returns the manager of the CSI call metrics
// (csi_sidecar_operations_seconds), in a registry of its own for Handler to
// serve. It leaves process_start_time_seconds to the process collector
// Handler serves, as upstream does: two registries serving one family would
// break the scrape. opts add to that, e.g. csimetrics.WithMigration() for the
// migrated label of a CSI migration target's calls.
func NewCSIMetricsManager(opts ...csimetrics.MetricsManagerOption) csimetrics.CSIMetricsManager {
	return csimetrics.NewCSIMetricsManagerWithOptions("", append([]csimetrics.MetricsManagerOption{csimetrics.WithProcessStartTime(false)}, opts...)...)
}

// NewRegistry returns the registry of the sidecar's own metrics (provisioning,
// API requests, the library's, capacity), for Handler to serve beside the
// CSI metrics manager's.
func NewRegistry() k8smetrics.KubeRegistry { return k8smetrics.NewKubeRegistry() }

// errorLog sends promhttp's gathering errors to klog.
type errorLog struct{}

func (errorLog) Println(v ...any) { klog.ErrorS(nil, "Gathering metrics", "detail", fmt.Sprint(v...)) }
