package features

import (
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/discovery"
	"k8s.io/component-base/featuregate"
)

// servedAPI is an API a gate needs from kube-apiserver: a resource of a
// group version, as discovery lists it.
type servedAPI struct {
	groupVersion, resource string
}

// gateAPIs are the gates that only make sense when kube-apiserver serves an
// API. VolumeAttributesClass reads storage.k8s.io/v1 volumeattributesclasses
// (v1 since Kubernetes 1.34); upstream v6.0 turns the gate off when that API
// is missing (#1423) rather than failing on a lister that never syncs.
var gateAPIs = map[featuregate.Feature]servedAPI{
	VolumeAttributesClass: {groupVersion: "storage.k8s.io/v1", resource: "volumeattributesclasses"},
}

// DisableUnserved turns off every enabled gate of Gate whose API
// kube-apiserver does not serve, and returns those gates. It asks discovery
// once, at start: a server upgraded later is noticed at the next sidecar
// restart, as upstream. A discovery error other than "group version not
// found" is returned, gates unchanged: the sidecar cannot tell.
func DisableUnserved(d discovery.ServerResourcesInterface) ([]featuregate.Feature, error) {
	return disableUnserved(Gate, d)
}

func disableUnserved(g gate, d discovery.ServerResourcesInterface) ([]featuregate.Feature, error) {
	var off []featuregate.Feature
	for f, api := range gateAPIs {
		if !g.Enabled(f) {
			continue
		}
		served, err := isServed(d, api)
		if err != nil {
			return nil, fmt.Errorf("checking whether kube-apiserver serves %s %s for feature gate %s: %w", api.groupVersion, api.resource, f, err)
		}
		if !served {
			off = append(off, f)
		}
	}
	if len(off) == 0 {
		return nil, nil
	}
	m := map[string]bool{}
	for _, f := range off {
		m[string(f)] = false
	}
	if err := g.SetFromMap(m); err != nil {
		return nil, fmt.Errorf("turning off feature gates %v: %w", off, err)
	}
	return off, nil
}

// isServed reports whether discovery lists the API's resource.
func isServed(d discovery.ServerResourcesInterface, api servedAPI) (bool, error) {
	list, err := d.ServerResourcesForGroupVersion(api.groupVersion)
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	for _, r := range list.APIResources {
		if r.Name == api.resource {
			return true, nil
		}
	}
	return false, nil
}
