package provisioner

import (
	"context"
	"strings"

	storageinformers "k8s.io/client-go/informers/storage/v1"
	storagelisters "k8s.io/client-go/listers/storage/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"

	"github.com/crossns/external-provisioner/pkg/access"
)

// VolumeAttributesClassRule is what caching VolumeAttributesClasses needs.
// Upstream external-provisioner v6.3.0's ClusterRole grants only "get" on
// them (it reads each class from kube-apiserver).
var VolumeAttributesClassRule = access.Rule{Group: "storage.k8s.io", Resource: "volumeattributesclasses", Verbs: []string{"list", "watch"}}

// VolumeAttributesClassLister returns the lister Config.VolumeAttributesClasses
// should get: the informer's when RBAC allows VolumeAttributesClassRule (or
// the review cannot be made), else one over an empty cache that is never
// filled, so every class is read with a GET (getVolumeAttributesClass), as
// upstream does, instead of an informer that fails to list over and over. A
// missing rule is logged once, with the rule to add.
func VolumeAttributesClassLister(ctx context.Context, checker access.Checker, informer storageinformers.VolumeAttributesClassInformer) storagelisters.VolumeAttributesClassLister {
	missing, err := checker.Allowed(ctx, VolumeAttributesClassRule)
	logger := klog.FromContext(ctx)
	if err != nil {
		logger.Error(err, "Cannot tell whether VolumeAttributesClasses may be cached; caching them")
	}
	if len(missing) == 0 {
		return informer.Lister() // registers the informer with its factory
	}
	logger.Info("RBAC does not allow csi-provisioner to "+strings.Join(missing, ", ")+" volumeattributesclasses: each claim's class is read from kube-apiserver (get), as upstream does. "+
		"Add this rule to the ClusterRole to read them from a cache", "rule", VolumeAttributesClassRule.String())
	return storagelisters.NewVolumeAttributesClassLister(cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{}))
}
