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
var Gate = newGate()

// gate is what --feature-gates needs: a versioned gate (component-base's
// logging gates require one) that is also a flag.Value.
type gate interface {
	featuregate.MutableVersionedFeatureGate
	String() string
}

func newGate() gate { return featuregate.NewFeatureGate() }

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

// GateFlag adapts Gate to flag.Value. The flag package calls String on a
// zero value of the type when printing help, which a zero featureGate cannot
// answer; this adapter can.
type GateFlag struct{ gate gate }

// Flag returns Gate as a flag.Value for --feature-gates.
func Flag() *GateFlag { return &GateFlag{gate: Gate} }

func (f *GateFlag) String() string {
	if f == nil || f.gate == nil {
		return ""
	}
	return f.gate.String()
}

// Set parses "Name=true,Other=false".
func (f *GateFlag) Set(v string) error { return f.gate.Set(v) }
