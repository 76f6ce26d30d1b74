// Package features lists the feature gates the sidecar honours.
package features

import (
	"k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/component-base/featuregate"
)

const (
	// CrossNamespaceVolumeDataSource lets a claim name, in spec.dataSourceRef,
	// a VolumeSnapshot or PersistentVolumeClaim in another namespace when a
	// ReferenceGrant there allows it.
	//
	// owner: @crossns/storage
	// kep: https://kep.k8s.io/3294
	// alpha: v0.1
	CrossNamespaceVolumeDataSource featuregate.Feature = "CrossNamespaceVolumeDataSource"
)

// Gate is the sidecar's own gate set, filled by --feature-gates. It is not
// k8s.io/apiserver's global gate: the sidecar is not an API server and should
// not pull that module in for one map.
var Gate featuregate.MutableFeatureGate = featuregate.NewFeatureGate()

func init() {
	runtime.Must(Gate.Add(defaultFeatureGates))
}

// defaultFeatureGates keeps the gate off by default, as KEP-3294 is alpha: a
// cross-namespace reference is a security decision an admin opts into.
var defaultFeatureGates = map[featuregate.Feature]featuregate.FeatureSpec{
	CrossNamespaceVolumeDataSource: {Default: false, PreRelease: featuregate.Alpha},
}

// Enabled reports whether feature f is on.
func Enabled(f featuregate.Feature) bool { return Gate.Enabled(f) }
