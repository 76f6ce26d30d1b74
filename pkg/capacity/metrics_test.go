package capacity

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/component-base/metrics"
	"k8s.io/component-base/metrics/testutil"
)

// TestMetrics scrapes the publisher's gauges from a registry, as the metrics
// endpoint serves them, with upstream's names and help.
func TestMetrics(t *testing.T) {
	nodeA, csiNodeA := nodeIn("node-a", "a")
	nodeB, csiNodeB := nodeIn("node-b", "b")
	twoZones := []runtime.Object{nodeA, csiNodeA, nodeB, csiNodeB}
	fast := class("fast", driver, wffc, nil)
	slow := class("slow", driver, wffc, nil)
	// Objects left from before: one still wanted (fast in a) with a
	// duplicate, one of a class that is gone, one of a segment that is gone
	// and one without nodeTopology (no node), which is never ours.
	existing := []runtime.Object{
		published("csisc-a1", "fast", "a", "10Gi"),
		published("csisc-a2", "fast", "a", "10Gi"),
		published("csisc-gone", "gone", "a", "1Gi"),
		published("csisc-c", "fast", "c", "1Gi"),
		withoutTopology(published("csisc-none", "fast", "b", "1Gi")),
	}

	tests := []struct {
		name       string
		noTopology bool
		objs       []runtime.Object
		// run: "" nothing, "resync" only the resync (wanted pairs known,
		// nothing written yet), "all" the resync and every key.
		run                     string
		goal, current, obsolete int
	}{
		{
			name: "before the first resync nothing is known",
			objs: append(append([]runtime.Object{fast, slow}, twoZones...), existing...),
		},
		{
			name: "after the resync: wanted pairs, those with an object, objects to delete",
			objs: append(append([]runtime.Object{fast, slow}, twoZones...), existing...),
			run:  "resync",
			// fast and slow in a and b; only fast in a exists (twice: the
			// duplicate is not obsolete); gone, c and the one without
			// topology are obsolete.
			goal: 4, current: 1, obsolete: 3,
		},
		{
			name: "after syncing every key",
			objs: append(append([]runtime.Object{fast, slow}, twoZones...), existing...),
			run:  "all",
			goal: 4, current: 4,
		},
		{
			name:       "no topology: one pair per class",
			noTopology: true,
			objs:       []runtime.Object{fast, slow, published("csisc-up", "fast", "", "1Gi"), withoutTopology(published("csisc-old", "slow", "", "1Gi"))},
			run:        "resync",
			goal:       2, current: 1, obsolete: 1,
		},
		{
			name:       "no classes of this driver",
			noTopology: true,
			objs:       []runtime.Object{class("theirs", "other.csi.example.com", wffc, nil), published("csisc-x", "theirs", "", "1Gi")},
			run:        "all",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fcsi := &fakeCSI{sizes: map[string]int64{"a": 1 << 30, "b": 1 << 30, "": 1 << 30}}
			f := newFixture(t, Config{}, !tc.noTopology, fcsi, tc.objs...)
			switch tc.run {
			case "resync":
				if err := f.ctrl.resync(context.Background()); err != nil {
					t.Fatal(err)
				}
			case "all":
				f.syncAll(t)
			}
			reg := metrics.NewKubeRegistry()
			reg.CustomMustRegister(f.ctrl.Metrics())
			want := fmt.Sprintf(`# HELP csistoragecapacities_desired_current [ALPHA] Number of CSIStorageCapacity objects that exist and are supposed to be managed automatically.
# TYPE csistoragecapacities_desired_current gauge
csistoragecapacities_desired_current %d
# HELP csistoragecapacities_desired_goal [ALPHA] Number of CSIStorageCapacity objects that are supposed to be managed automatically.
# TYPE csistoragecapacities_desired_goal gauge
csistoragecapacities_desired_goal %d
# HELP csistoragecapacities_obsolete [ALPHA] Number of CSIStorageCapacity objects that exist and will be deleted automatically. Objects that exist and may need an update are not considered obsolete and therefore not included in this value.
# TYPE csistoragecapacities_obsolete gauge
csistoragecapacities_obsolete %d
`, tc.current, tc.goal, tc.obsolete)
			if err := testutil.GatherAndCompare(reg, strings.NewReader(want)); err != nil {
				t.Error(err)
			}
		})
	}
}
