// Package metrics defines the sidecar's own Prometheus metrics: provisioning
// outcomes by source, denials by reason, and Kubernetes API requests by verb
// and resource (what the provisioner spends its client budget on).
package metrics

import (
	"time"

	"k8s.io/component-base/metrics"

	"github.com/crossns/external-provisioner/pkg/datasource"
)

const subsystem = "csi_provisioner"

// Provisioning records provisioning outcomes. A nil *Provisioning records
// nothing, which keeps tests and callers free of nil checks.
type Provisioning struct {
	total    *metrics.CounterVec
	duration *metrics.HistogramVec
	denials  *metrics.CounterVec
}

// NewProvisioning creates the metrics and registers them.
func NewProvisioning(reg metrics.KubeRegistry) *Provisioning {
	m := &Provisioning{
		total: metrics.NewCounterVec(&metrics.CounterOpts{
			Subsystem: subsystem, Name: "provision_total", StabilityLevel: metrics.ALPHA,
			Help: "Provisioning attempts that reached CreateVolume, by source kind (none, VolumeSnapshot, PersistentVolumeClaim), whether the source was in another namespace, and result (success, error).",
		}, []string{"source_kind", "cross_namespace", "result"}),
		duration: metrics.NewHistogramVec(&metrics.HistogramOpts{
			Subsystem: subsystem, Name: "provision_duration_seconds", StabilityLevel: metrics.ALPHA,
			Help:    "Duration of provisioning attempts that reached CreateVolume, by source kind and whether the source was in another namespace.",
			Buckets: []float64{.01, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300},
		}, []string{"source_kind", "cross_namespace"}),
		denials: metrics.NewCounterVec(&metrics.CounterOpts{
			Subsystem: subsystem, Name: "datasource_denials_total", StabilityLevel: metrics.ALPHA,
			Help: "Claims refused before CreateVolume because their data source was not allowed, by reason (gate_disabled, no_grant, grants_unavailable, revoked_in_flight).",
		}, []string{"reason"}),
	}
	reg.MustRegister(m.total, m.duration, m.denials)
	return m
}

// ObserveProvision records one attempt that called CreateVolume.
func (m *Provisioning) ObserveProvision(src *datasource.Source, err error, d time.Duration) {
	if m == nil {
		return
	}
	kind, cross := "none", "false"
	if src != nil {
		kind = src.Kind
		if src.CrossNamespace {
			cross = "true"
		}
	}
	result := "success"
	if err != nil {
		result = "error"
	}
	m.total.WithLabelValues(kind, cross, result).Inc()
	m.duration.WithLabelValues(kind, cross).Observe(d.Seconds())
}

// ObserveDenial records a refused data source.
func (m *Provisioning) ObserveDenial(reason string) {
	if m == nil {
		return
	}
	m.denials.WithLabelValues(reason).Inc()
}
