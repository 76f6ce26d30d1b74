package provisioner

import (
	"fmt"
	"reflect"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"k8s.io/component-base/metrics"
	"k8s.io/component-base/metrics/testutil"

	"github.com/crossns/external-provisioner/pkg/datasource"
	pmetrics "github.com/crossns/external-provisioner/pkg/metrics"
	"github.com/crossns/external-provisioner/pkg/referencegrant"
)

const (
	provisionTotal    = "csi_provisioner_provision_total"
	provisionDuration = "csi_provisioner_provision_duration_seconds"
	denialsTotal      = "csi_provisioner_datasource_denials_total"
)

// series is one (source_kind, cross_namespace) pair of the provision metrics.
type series struct{ kind, cross string }

var allSeries = []series{
	{"none", "false"},
	{datasource.SnapshotKind, "false"}, {datasource.SnapshotKind, "true"},
	{datasource.ClaimKind, "false"}, {datasource.ClaimKind, "true"},
}

// counterValues returns the counter values of metric name matching labels,
// keyed by the value of label by; an absent metric has none.
func counterValues(t *testing.T, g metrics.Gatherer, name string, labels map[string]string, by string) map[string]float64 {
	t.Helper()
	got, err := testutil.GetCounterValuesFromGatherer(g, name, labels, by)
	if err != nil {
		if strings.Contains(err.Error(), "not found") || strings.Contains(err.Error(), "is empty") {
			return map[string]float64{}
		}
		t.Fatalf("gathering %s: %v", name, err)
	}
	return got
}

func TestProvisioningMetrics(t *testing.T) {
	tests := []struct {
		name string
		// run provisions claims against e
		run func(t *testing.T, e *env)
		// wantResults are provision_total by result, per series; absent series have none
		wantResults map[series]map[string]float64
		// wantDenials are datasource_denials_total by reason
		wantDenials map[string]float64
	}{
		{
			name: "cross-namespace restore succeeds",
			run: func(t *testing.T, e *env) {
				e.grants.Allow(nightlyRef, "allow-dev")
				e.provision(newClaim("dev", "copy", fromSnapshot("prod", "nightly")), newClass(nil))
			},
			wantResults: map[series]map[string]float64{{datasource.SnapshotKind, "true"}: {"success": 1}},
			wantDenials: map[string]float64{},
		},
		{
			name: "cross-namespace clone succeeds twice",
			run: func(t *testing.T, e *env) {
				e.grants.Allow(dbRef, "clone-db")
				e.provision(newClaim("dev", "copy", fromClaim("prod", "db")), newClass(nil))
				e.provision(newClaim("dev", "copy-2", withUID("other-uid"), fromClaim("prod", "db")), newClass(nil))
			},
			wantResults: map[series]map[string]float64{{datasource.ClaimKind, "true"}: {"success": 2}},
			wantDenials: map[string]float64{},
		},
		{
			name: "no grant: a denial, no provisioning attempt",
			run: func(t *testing.T, e *env) {
				e.provision(newClaim("dev", "copy", fromSnapshot("prod", "nightly")), newClass(nil))
			},
			wantResults: map[series]map[string]float64{},
			wantDenials: map[string]float64{"no_grant": 1},
		},
		{
			name: "gate off",
			run: func(t *testing.T, e *env) {
				e.resolver.CrossNamespace = false
				e.provision(newClaim("dev", "copy", fromSnapshot("prod", "nightly")), newClass(nil))
			},
			wantResults: map[series]map[string]float64{},
			wantDenials: map[string]float64{"gate_disabled": 1},
		},
		{
			name: "grants unavailable",
			run: func(t *testing.T, e *env) {
				e.grants.SetError(fmt.Errorf("forbidden: %w", referencegrant.ErrUnavailable))
				e.provision(newClaim("dev", "copy", fromSnapshot("prod", "nightly")), newClass(nil))
			},
			wantResults: map[series]map[string]float64{},
			wantDenials: map[string]float64{"grants_unavailable": 1},
		},
		{
			name: "cross-namespace CreateVolume fails",
			run: func(t *testing.T, e *env) {
				e.grants.Allow(nightlyRef, "allow-dev")
				e.csi.script = []createFunc{createFails(codes.Internal)}
				e.provision(newClaim("dev", "copy", fromSnapshot("prod", "nightly")), newClass(nil))
			},
			wantResults: map[series]map[string]float64{{datasource.SnapshotKind, "true"}: {"error": 1}},
			wantDenials: map[string]float64{},
		},
		{
			name: "grant revoked while CreateVolume was in flight",
			run: func(t *testing.T, e *env) {
				e.grants.Allow(nightlyRef, "allow-dev")
				claim := newClaim("dev", "copy", fromSnapshot("prod", "nightly"))
				e.csi.script = []createFunc{createFails(codes.DeadlineExceeded)}
				e.provision(claim, newClass(nil))
				e.grants.Revoke(nightlyRef)
				e.provision(claim, newClass(nil))
			},
			wantResults: map[series]map[string]float64{{datasource.SnapshotKind, "true"}: {"error": 1}},
			wantDenials: map[string]float64{"revoked_in_flight": 1},
		},
		{
			name: "same-namespace restore and a plain volume",
			run: func(t *testing.T, e *env) {
				e.provision(newClaim("prod", "restore", fromSnapshot("", "nightly")), newClass(nil))
				e.provision(newClaim("dev", "plain", withUID("plain-uid")), newClass(nil))
			},
			wantResults: map[series]map[string]float64{
				{datasource.SnapshotKind, "false"}: {"success": 1},
				{"none", "false"}:                  {"success": 1},
			},
			wantDenials: map[string]float64{},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			reg := metrics.NewKubeRegistry()
			e := newEnv(t, append(prodSnapshot(), prodClaim()...)...)
			e.p.Metrics = pmetrics.NewProvisioning(reg)
			tc.run(t, e)

			for _, s := range allSeries {
				labels := map[string]string{"source_kind": s.kind, "cross_namespace": s.cross}
				want := tc.wantResults[s]
				if want == nil {
					want = map[string]float64{}
				}
				if got := counterValues(t, reg, provisionTotal, labels, "result"); !reflect.DeepEqual(got, want) {
					t.Errorf("%s%v by result = %v, want %v", provisionTotal, labels, got, want)
				}
				// Every counted attempt has its duration observed.
				var attempts float64
				for _, n := range want {
					attempts += n
				}
				if attempts == 0 {
					continue
				}
				h, err := testutil.GetHistogramVecFromGatherer(reg, provisionDuration, labels)
				if err != nil {
					t.Fatalf("gathering %s: %v", provisionDuration, err)
				}
				if got := h.GetAggregatedSampleCount(); float64(got) != attempts {
					t.Errorf("%s%v count = %d, want %v", provisionDuration, labels, got, attempts)
				}
			}
			if got := counterValues(t, reg, denialsTotal, nil, "reason"); !reflect.DeepEqual(got, tc.wantDenials) {
				t.Errorf("%s by reason = %v, want %v", denialsTotal, got, tc.wantDenials)
			}
		})
	}
}
