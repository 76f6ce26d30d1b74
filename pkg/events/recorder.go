package events

import (
	"context"

	snapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	clientscheme "k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/record"
)

// Scheme knows every kind the sidecar puts Events on: claims, PVs and
// VolumeSnapshots (a cross-namespace source's owner sees who used it).
var Scheme = func() *runtime.Scheme {
	s := runtime.NewScheme()
	_ = clientscheme.AddToScheme(s)
	_ = snapshotv1.AddToScheme(s)
	return s
}()

// NewRecorder returns a recorder that writes through eventClient. Give it a
// client with its own QPS budget (as kube-scheduler does) so Events never
// delay creating PVs.
func NewRecorder(ctx context.Context, eventClient kubernetes.Interface, component string) record.EventRecorder {
	b := record.NewBroadcaster(record.WithContext(ctx))
	b.StartStructuredLogging(4)
	b.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: eventClient.CoreV1().Events(v1.NamespaceAll)})
	return b.NewRecorder(Scheme, v1.EventSource{Component: component})
}
