// Package features lists the feature gates the sidecar honours: upstream
// external-provisioner v6.3.0's gates, with their names, stages and defaults,
// so a manifest written for it starts this sidecar unchanged.
package features

import (
	"fmt"
	"sort"
	"strings"

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

	// Topology passes accessibility requirements to CreateVolume and turns
	// the volume's accessible topology into the PV's node affinity, for
	// drivers with the VOLUME_ACCESSIBILITY_CONSTRAINTS capability. Off, the
	// sidecar does neither, for any driver. Upstream made it GA and on by
	// default in v5.0 (#1167) and keeps it settable, so charts that pass
	// Topology=true (or =false) keep working.
	//
	// owner: @crossns/storage (upstream: @verult)
	// GA: upstream v1.5, default on since upstream v5.0
	Topology featuregate.Feature = "Topology"

	// VolumeAttributesClass passes a claim's VolumeAttributesClass parameters
	// to CreateVolume as mutable parameters. It is treated as off when the
	// API server does not serve storage.k8s.io/v1 volumeattributesclasses
	// (DisableUnserved), as upstream v6.0 does (#1423).
	//
	// owner: @crossns/storage (upstream: @sunnylovestiramisu @ConnorJC3)
	// kep: https://kep.k8s.io/3751
	// GA: upstream v6.0
	VolumeAttributesClass featuregate.Feature = "VolumeAttributesClass"

	// ReleaseLeaderElectionOnExit releases the leader election Lease when the
	// sidecar gets SIGTERM or SIGINT, so the next replica takes over at once
	// instead of after --leader-election-lease-duration.
	//
	// owner: @crossns/storage (upstream: @rhrmo)
	// alpha: upstream v6.0 (Kubernetes sidecars v1.34)
	ReleaseLeaderElectionOnExit featuregate.Feature = "ReleaseLeaderElectionOnExit"

	// CrossNamespaceVolumeSharing lets a claim annotated
	// provisioner.crossns.io/share-from: <namespace>/<claim> be bound to the
	// volume of that claim itself (live, no copy), when the source claim is
	// annotated provisioner.crossns.io/sharing and, across namespaces, a
	// ReferenceGrant there allows it (pkg/sharing). Ours, not upstream's; it
	// needs no Kubernetes feature gate. Off, share-from claims are refused
	// with an Event; volumes shared earlier keep working and keep their
	// source held.
	//
	// owner: @crossns/storage
	// issue: 11 (live sharing)
	// alpha: v0.1
	CrossNamespaceVolumeSharing featuregate.Feature = "CrossNamespaceVolumeSharing"
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

// defaultFeatureGates are upstream v6.3.0's gates (its README's feature
// table and pkg/features), and ours. CrossNamespaceVolumeDataSource stays
// off by default, as KEP-3294 is alpha: a cross-namespace reference is a
// security decision an admin opts into; so does CrossNamespaceVolumeSharing.
// No gate is locked: upstream lets each be set either way.
var defaultFeatureGates = map[featuregate.Feature]featuregate.FeatureSpec{
	CrossNamespaceVolumeDataSource: {Default: false, PreRelease: featuregate.Alpha},
	Topology:                       {Default: true, PreRelease: featuregate.GA},
	VolumeAttributesClass:          {Default: true, PreRelease: featuregate.GA},
	ReleaseLeaderElectionOnExit:    {Default: false, PreRelease: featuregate.Alpha},
	CrossNamespaceVolumeSharing:    {Default: false, PreRelease: featuregate.Alpha},
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

// Set parses "Name=true,Other=false". Each use of the flag adds to what
// earlier ones set (a later value for the same gate wins), as upstream's
// map-valued flag does: manifests pass one --feature-gates per gate.
func (f *GateFlag) Set(v string) error {
	if err := f.gate.Set(v); err != nil {
		return fmt.Errorf("%w (gates this csi-provisioner knows: %s)", err, strings.Join(f.names(), ", "))
	}
	return nil
}

// names are the gates the flag accepts, sorted. KnownFeatures (the --help
// list) leaves GA gates out, but they can still be set.
func (f *GateFlag) names() []string {
	var out []string
	for k := range f.gate.GetAll() {
		out = append(out, string(k))
	}
	sort.Strings(out)
	return out
}

// Help is the --feature-gates usage: every gate with its stage and default,
// one a line. Unlike KnownFeatures it lists GA gates too (Topology,
// VolumeAttributesClass), since manifests set them.
func Help() string {
	var lines []string
	for f, spec := range Gate.GetAll() {
		if _, ours := defaultFeatureGates[f]; !ours && spec.PreRelease == featuregate.GA {
			continue // component-base's own GA gates (logging) are not settable news
		}
		stage := string(spec.PreRelease)
		if spec.PreRelease == featuregate.GA {
			stage = "GA" // featuregate.GA is ""
		}
		lines = append(lines, fmt.Sprintf("%s=true|false (%s - default=%t)", f, stage, spec.Default))
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

// Effective is the state of the sidecar's own gates, "Name=bool,..." sorted,
// for the start-up log: what a combination of --feature-gates flags and
// DisableUnserved left.
func Effective() string {
	var pairs []string
	for f := range defaultFeatureGates {
		pairs = append(pairs, fmt.Sprintf("%s=%t", f, Gate.Enabled(f)))
	}
	sort.Strings(pairs)
	return strings.Join(pairs, ",")
}
