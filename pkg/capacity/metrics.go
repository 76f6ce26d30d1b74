package capacity

import (
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/component-base/metrics"
)

// The publisher's gauges carry upstream external-provisioner's names, help
// and meaning, so dashboards and alerts written for it keep working.
var (
	goalDesc = metrics.NewDesc("csistoragecapacities_desired_goal",
		"Number of CSIStorageCapacity objects that are supposed to be managed automatically.",
		nil, nil, metrics.ALPHA, "")
	currentDesc = metrics.NewDesc("csistoragecapacities_desired_current",
		"Number of CSIStorageCapacity objects that exist and are supposed to be managed automatically.",
		nil, nil, metrics.ALPHA, "")
	obsoleteDesc = metrics.NewDesc("csistoragecapacities_obsolete",
		"Number of CSIStorageCapacity objects that exist and will be deleted automatically. Objects that exist and may need an update are not considered obsolete and therefore not included in this value.",
		nil, nil, metrics.ALPHA, "")
)

// Metrics returns the publisher's gauges, computed from its caches at each
// scrape; register it in the registry the metrics endpoint serves.
//
//   - goal: class and segment pairs that should have an object (classes
//     published for, times the segments of the last resync);
//   - current: those pairs that have an object;
//   - obsolete: objects of this driver and sidecar whose pair should have
//     none (class or segment gone, a nodeTopology of someone else's form).
//     A duplicate of a wanted pair is not obsolete: it is one that may need
//     an update, as upstream counts it.
//
// All three are 0 until the first resync knows which pairs are wanted, and
// on a sidecar that is not the leader (its caches are not started).
func (c *Controller) Metrics() metrics.StableCollector {
	return &collector{c: c}
}

type collector struct {
	metrics.BaseStableCollector
	c *Controller
}

func (m *collector) DescribeWithStability(ch chan<- *metrics.Desc) {
	ch <- goalDesc
	ch <- currentDesc
	ch <- obsoleteDesc
}

func (m *collector) CollectWithStability(ch chan<- metrics.Metric) {
	goal, current, obsolete := m.c.counts()
	ch <- metrics.NewLazyConstMetric(goalDesc, metrics.GaugeValue, float64(goal))
	ch <- metrics.NewLazyConstMetric(currentDesc, metrics.GaugeValue, float64(current))
	ch <- metrics.NewLazyConstMetric(obsoleteDesc, metrics.GaugeValue, float64(obsolete))
}

// counts computes the gauges from the class cache, the segments of the last
// resync and the cache of published objects.
func (c *Controller) counts() (goal, current, obsolete int) {
	c.mu.Lock()
	segments := c.segments // replaced, never modified, by resync
	c.mu.Unlock()
	if segments == nil {
		return 0, 0, 0
	}
	wanted := map[key]bool{}
	classes, err := c.classes.List(labels.Everything())
	if err != nil {
		return 0, 0, 0
	}
	for _, class := range classes {
		if !c.publishes(class) {
			continue
		}
		for id := range segments {
			wanted[key{class: class.Name, segment: id}] = false
		}
	}
	for _, obj := range c.capacities.List() {
		sc, ok := obj.(*storagev1.CSIStorageCapacity)
		if !ok || sc.Namespace != c.cfg.Namespace {
			continue
		}
		k := keyOf(sc)
		if _, ok := wanted[k]; ok {
			wanted[k] = true
		} else {
			obsolete++
		}
	}
	for _, exists := range wanted {
		if exists {
			current++
		}
	}
	return len(wanted), current, obsolete
}
