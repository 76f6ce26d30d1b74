package referencegrant

import (
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/discovery"
)

const (
	// apiGroup is the API group of ReferenceGrant.
	apiGroup = "gateway.networking.k8s.io"
	// resource is the plural resource name of ReferenceGrant.
	resource = "referencegrants"
)

// preferredVersions lists the versions of ReferenceGrant this package reads,
// best first. v1 is preferred because v1beta1 will stop being served some
// day; v1beta1 is still read because clusters with older Gateway API CRDs
// serve only that.
var preferredVersions = []string{"v1", "v1beta1"}

// servedVersion asks the API server which version of ReferenceGrant it serves
// and returns the best one, or "" when it serves none (the CRD is not
// installed). A group version the server does not know is "not served";
// any other error is returned, because it says nothing about the CRD.
func servedVersion(client discovery.DiscoveryInterface) (string, error) {
	for _, version := range preferredVersions {
		groupVersion := apiGroup + "/" + version
		list, err := client.ServerResourcesForGroupVersion(groupVersion)
		if apierrors.IsNotFound(err) {
			continue
		}
		if err != nil {
			return "", fmt.Errorf("discovering resources of %s: %w", groupVersion, err)
		}
		for _, r := range list.APIResources {
			if r.Name == resource {
				return version, nil
			}
		}
	}
	return "", nil
}
