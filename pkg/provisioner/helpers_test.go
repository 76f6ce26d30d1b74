package provisioner

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/kubernetes-csi/csi-lib-utils/rpc"
	snapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	snapshotlisters "github.com/kubernetes-csi/external-snapshotter/client/v8/listers/volumesnapshot/v1"
	"google.golang.org/protobuf/proto"
	v1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	corelisters "k8s.io/client-go/listers/core/v1"
	storagelisters "k8s.io/client-go/listers/storage/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/sig-storage-lib-external-provisioner/v10/controller"

	"github.com/crossns/external-provisioner/pkg/datasource"
	"github.com/crossns/external-provisioner/pkg/referencegrant"
)

const (
	driverName = "hostpath.csi.k8s.io"
	identity   = "1700000000000-8081-" + driverName
	claimUID   = types.UID("3a5f8a3e-1c2d-4e5f-8a9b-0c1d2e3f4a5b")
	// pvName is the name the provision loop gives the PV of the test claim.
	pvName = "pvc-" + string(claimUID)
)

// env is one provisioner wired to fakes: informer indexers behind the
// resolver's listers, a fake ReferenceGrant checker, a fake CSI driver, a fake
// clientset for secrets and classes, and a fake event recorder.
type env struct {
	p         *Provisioner
	resolver  *datasource.Resolver
	grants    *referencegrant.Fake
	csi       *fakeCSI
	recorder  *record.FakeRecorder
	client    *fake.Clientset
	protector *fakeProtector

	claims, volumes, snapshots, contents, attachments cache.Indexer
}

// newEnv preloads objs: claims, PVs, snapshots, contents and
// VolumeAttachments go into the informer indexers; secrets and
// StorageClasses into the clientset.
func newEnv(t *testing.T, objs ...runtime.Object) *env {
	t.Helper()
	newIndexer := func() cache.Indexer {
		return cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
	}
	e := &env{
		grants:      referencegrant.NewFake(),
		csi:         &fakeCSI{},
		recorder:    record.NewFakeRecorder(100),
		protector:   &fakeProtector{},
		claims:      newIndexer(),
		volumes:     newIndexer(),
		snapshots:   newIndexer(),
		contents:    newIndexer(),
		attachments: newIndexer(),
	}
	e.recorder.IncludeObject = true
	var clientObjs []runtime.Object
	for _, o := range objs {
		var err error
		switch o.(type) {
		case *v1.PersistentVolumeClaim:
			err = e.claims.Add(o)
		case *v1.PersistentVolume:
			err = e.volumes.Add(o)
		case *snapshotv1.VolumeSnapshot:
			err = e.snapshots.Add(o)
		case *snapshotv1.VolumeSnapshotContent:
			err = e.contents.Add(o)
		case *storagev1.VolumeAttachment:
			err = e.attachments.Add(o)
		default:
			clientObjs = append(clientObjs, o)
		}
		if err != nil {
			t.Fatalf("preloading %T: %v", o, err)
		}
	}
	e.client = fake.NewClientset(clientObjs...)
	e.resolver = &datasource.Resolver{
		DriverName:                  driverName,
		CrossNamespace:              true,
		PreventVolumeModeConversion: true,
		Grants:                      e.grants,
		Snapshots:                   snapshotCaches{snapshotlisters.NewVolumeSnapshotLister(e.snapshots), snapshotlisters.NewVolumeSnapshotContentLister(e.contents)},
		Claims:                      corelisters.NewPersistentVolumeClaimLister(e.claims),
		Volumes:                     corelisters.NewPersistentVolumeLister(e.volumes),
	}
	e.p = New(Config{
		DriverName:           driverName,
		Identity:             identity,
		CSI:                  e.csi,
		ControllerCaps:       rpc.ControllerCapabilitySet{},
		PluginCaps:           rpc.PluginCapabilitySet{},
		Client:               e.client,
		Timeout:              time.Minute,
		VolumeNamePrefix:     "pvc",
		VolumeNameUUIDLength: -1,
		Sources:              e.resolver,
		Protector:            e.protector,
		VolumeAttachments:    storagelisters.NewVolumeAttachmentLister(e.attachments),
		Recorder:             e.recorder,
	})
	return e
}

// provision calls Provision the way the provision loop does.
func (e *env) provision(claim *v1.PersistentVolumeClaim, class *storagev1.StorageClass) (*v1.PersistentVolume, controller.ProvisioningState, error) {
	return e.provisionOn(claim, class, nil)
}

func (e *env) provisionOn(claim *v1.PersistentVolumeClaim, class *storagev1.StorageClass, node *v1.Node) (*v1.PersistentVolume, controller.ProvisioningState, error) {
	return e.p.Provision(context.Background(), controller.ProvisionOptions{
		StorageClass: class,
		PVName:       "pvc-" + string(claim.UID),
		PVC:          claim,
		SelectedNode: node,
	})
}

// onlyCreate returns the single CreateVolume request the driver got.
func (e *env) onlyCreate(t *testing.T) *csi.CreateVolumeRequest {
	t.Helper()
	if len(e.csi.creates) != 1 {
		t.Fatalf("driver got %d CreateVolume calls, want 1", len(e.csi.creates))
	}
	return e.csi.creates[0]
}

// assertNoCreate checks that the driver was never asked to create a volume.
func (e *env) assertNoCreate(t *testing.T) {
	t.Helper()
	if n := len(e.csi.creates); n != 0 {
		t.Errorf("driver got %d CreateVolume calls, want none: %v", n, e.csi.creates)
	}
}

// events drains the Events recorded so far.
func (e *env) events() []string {
	var out []string
	for {
		select {
		case ev := <-e.recorder.Events:
			out = append(out, ev)
		default:
			return out
		}
	}
}

// wantEvent describes an Event: on which kind of object, its type and
// reason, and words its message must contain.
type wantEvent struct {
	kind, eventType, reason string
	words                   []string
}

func claimEvent(eventType, reason string, words ...string) wantEvent {
	return wantEvent{kind: "PersistentVolumeClaim", eventType: eventType, reason: reason, words: words}
}

// assertEvents checks the Events recorded since the last call, in order.
func (e *env) assertEvents(t *testing.T, want ...wantEvent) {
	t.Helper()
	got := e.events()
	if len(got) != len(want) {
		t.Errorf("got %d Events, want %d:\n%s", len(got), len(want), strings.Join(got, "\n"))
		return
	}
	for i, w := range want {
		if !strings.HasPrefix(got[i], w.eventType+" "+w.reason+" ") {
			t.Errorf("Event %d = %q, want type %s reason %s", i, got[i], w.eventType, w.reason)
		}
		if !strings.Contains(got[i], "involvedObject{kind="+w.kind+",") {
			t.Errorf("Event %d = %q, want it on a %s", i, got[i], w.kind)
		}
		for _, word := range w.words {
			if !strings.Contains(got[i], word) {
				t.Errorf("Event %d = %q, want it to contain %q", i, got[i], word)
			}
		}
	}
}

// isIgnored tells whether err is an IgnoredError the way the provision loop
// does: by type assertion, not errors.As.
func isIgnored(err error) bool {
	_, ok := err.(*controller.IgnoredError)
	return ok
}

// assertErr checks an error against a wanted substring ("" means no error).
func assertErr(t *testing.T, err error, want string) {
	t.Helper()
	switch {
	case want == "" && err != nil:
		t.Errorf("unexpected error: %v", err)
	case want != "" && err == nil:
		t.Errorf("got no error, want one containing %q", want)
	case want != "" && !strings.Contains(err.Error(), want):
		t.Errorf("error %q does not contain %q", err, want)
	}
}

// fakeProtector records the sources it was asked to protect.
type fakeProtector struct {
	mu        sync.Mutex
	protected []string
	err       error
	// hook runs inside Protect, e.g. to revoke a grant at that moment.
	hook func()
}

func (f *fakeProtector) Protect(_ context.Context, _ *v1.PersistentVolumeClaim, src *datasource.Source) error {
	f.mu.Lock()
	f.protected = append(f.protected, src.Ref.String())
	hook, err := f.hook, f.err
	f.mu.Unlock()
	if hook != nil {
		hook()
	}
	return err
}

// Object builders. Every object carries its TypeMeta so Events name its kind.

func newClaim(ns, name string, mods ...func(*v1.PersistentVolumeClaim)) *v1.PersistentVolumeClaim {
	c := &v1.PersistentVolumeClaim{
		TypeMeta:   metav1.TypeMeta{Kind: "PersistentVolumeClaim", APIVersion: "v1"},
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: claimUID},
		Spec: v1.PersistentVolumeClaimSpec{
			AccessModes:      []v1.PersistentVolumeAccessMode{v1.ReadWriteOnce},
			Resources:        v1.VolumeResourceRequirements{Requests: v1.ResourceList{v1.ResourceStorage: resource.MustParse("1Gi")}},
			StorageClassName: ptr.To("standard"),
		},
	}
	for _, m := range mods {
		m(c)
	}
	return c
}

func withModes(modes ...v1.PersistentVolumeAccessMode) func(*v1.PersistentVolumeClaim) {
	return func(c *v1.PersistentVolumeClaim) { c.Spec.AccessModes = modes }
}

func withRequest(q string) func(*v1.PersistentVolumeClaim) {
	return func(c *v1.PersistentVolumeClaim) {
		c.Spec.Resources.Requests = v1.ResourceList{v1.ResourceStorage: resource.MustParse(q)}
	}
}

func withLimit(q string) func(*v1.PersistentVolumeClaim) {
	return func(c *v1.PersistentVolumeClaim) {
		c.Spec.Resources.Limits = v1.ResourceList{v1.ResourceStorage: resource.MustParse(q)}
	}
}

func withMode(m v1.PersistentVolumeMode) func(*v1.PersistentVolumeClaim) {
	return func(c *v1.PersistentVolumeClaim) { c.Spec.VolumeMode = ptr.To(m) }
}

func withUID(uid types.UID) func(*v1.PersistentVolumeClaim) {
	return func(c *v1.PersistentVolumeClaim) { c.UID = uid }
}

func withAnnotations(kv ...string) func(*v1.PersistentVolumeClaim) {
	return func(c *v1.PersistentVolumeClaim) {
		c.Annotations = map[string]string{}
		for i := 0; i+1 < len(kv); i += 2 {
			c.Annotations[kv[i]] = kv[i+1]
		}
	}
}

// withSourceRef sets dataSourceRef (and, within one namespace, the mirrored
// dataSource, as kube-apiserver does).
func withSourceRef(group, kind, ns, name string) func(*v1.PersistentVolumeClaim) {
	return func(c *v1.PersistentVolumeClaim) {
		var g *string
		if group != "" {
			g = ptr.To(group)
		}
		c.Spec.DataSourceRef = &v1.TypedObjectReference{APIGroup: g, Kind: kind, Name: name}
		if ns != "" && ns != c.Namespace {
			c.Spec.DataSourceRef.Namespace = ptr.To(ns)
			return
		}
		c.Spec.DataSource = &v1.TypedLocalObjectReference{APIGroup: g, Kind: kind, Name: name}
	}
}

func fromSnapshot(ns, name string) func(*v1.PersistentVolumeClaim) {
	return withSourceRef(datasource.SnapshotGroup, datasource.SnapshotKind, ns, name)
}

func fromClaim(ns, name string) func(*v1.PersistentVolumeClaim) {
	return withSourceRef("", datasource.ClaimKind, ns, name)
}

// boundClaim is a source claim bound to volume volName.
func boundClaim(ns, name, volName, size string, mods ...func(*v1.PersistentVolumeClaim)) *v1.PersistentVolumeClaim {
	bound := func(c *v1.PersistentVolumeClaim) {
		c.UID = types.UID("uid-" + ns + "-" + name)
		c.Spec.VolumeName = volName
		c.Status.Phase = v1.ClaimBound
	}
	return newClaim(ns, name, append([]func(*v1.PersistentVolumeClaim){bound, withRequest(size)}, mods...)...)
}

func csiVolume(name, driver, handle string) *v1.PersistentVolume {
	return &v1.PersistentVolume{
		TypeMeta:   metav1.TypeMeta{Kind: "PersistentVolume", APIVersion: "v1"},
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: v1.PersistentVolumeSpec{
			PersistentVolumeSource: v1.PersistentVolumeSource{CSI: &v1.CSIPersistentVolumeSource{Driver: driver, VolumeHandle: handle}},
		},
	}
}

// volumeOf is the CSI PV a source claim is bound to, bound back to it.
func volumeOf(claim *v1.PersistentVolumeClaim, driver, handle string) *v1.PersistentVolume {
	pv := csiVolume(claim.Spec.VolumeName, driver, handle)
	pv.Spec.ClaimRef = &v1.ObjectReference{Kind: "PersistentVolumeClaim", Namespace: claim.Namespace, Name: claim.Name, UID: claim.UID}
	return pv
}

func newClass(params map[string]string, mods ...func(*storagev1.StorageClass)) *storagev1.StorageClass {
	c := &storagev1.StorageClass{
		TypeMeta:    metav1.TypeMeta{Kind: "StorageClass", APIVersion: "storage.k8s.io/v1"},
		ObjectMeta:  metav1.ObjectMeta{Name: "standard"},
		Provisioner: driverName,
		Parameters:  params,
	}
	for _, m := range mods {
		m(c)
	}
	return c
}

// readySnapshot is a VolumeSnapshot bound to content contentName, ready to use.
func readySnapshot(ns, name, contentName, restoreSize string, mods ...func(*snapshotv1.VolumeSnapshot)) *snapshotv1.VolumeSnapshot {
	s := &snapshotv1.VolumeSnapshot{
		TypeMeta:   metav1.TypeMeta{Kind: "VolumeSnapshot", APIVersion: "snapshot.storage.k8s.io/v1"},
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID("uid-snap-" + ns + "-" + name)},
		Status: &snapshotv1.VolumeSnapshotStatus{
			BoundVolumeSnapshotContentName: ptr.To(contentName),
			ReadyToUse:                     ptr.To(true),
			RestoreSize:                    ptr.To(resource.MustParse(restoreSize)),
		},
	}
	for _, m := range mods {
		m(s)
	}
	return s
}

// boundContent is a VolumeSnapshotContent of this driver bound back to
// snapshot snapNS/snapName, taken from a Filesystem volume.
func boundContent(name, snapNS, snapName, handle string, mods ...func(*snapshotv1.VolumeSnapshotContent)) *snapshotv1.VolumeSnapshotContent {
	c := &snapshotv1.VolumeSnapshotContent{
		TypeMeta:   metav1.TypeMeta{Kind: "VolumeSnapshotContent", APIVersion: "snapshot.storage.k8s.io/v1"},
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: snapshotv1.VolumeSnapshotContentSpec{
			VolumeSnapshotRef: v1.ObjectReference{Namespace: snapNS, Name: snapName, UID: types.UID("uid-snap-" + snapNS + "-" + snapName)},
			Driver:            driverName,
			SourceVolumeMode:  ptr.To(v1.PersistentVolumeFilesystem),
		},
		Status: &snapshotv1.VolumeSnapshotContentStatus{SnapshotHandle: ptr.To(handle)},
	}
	for _, m := range mods {
		m(c)
	}
	return c
}

// grantRef is the reference a claim in fromNS makes to a source in toNS.
func grantRef(fromNS, toGroup, toKind, toNS, toName string) referencegrant.Reference {
	return referencegrant.Reference{
		FromGroup: "", FromKind: datasource.ClaimKind, FromNamespace: fromNS,
		ToGroup: toGroup, ToKind: toKind, ToNamespace: toNS, ToName: toName,
	}
}

// snapshotSource and volumeSource are the content sources CreateVolume gets.
func snapshotSource(handle string) *csi.VolumeContentSource {
	return &csi.VolumeContentSource{Type: &csi.VolumeContentSource_Snapshot{Snapshot: &csi.VolumeContentSource_SnapshotSource{SnapshotId: handle}}}
}

func volumeSource(handle string) *csi.VolumeContentSource {
	return &csi.VolumeContentSource{Type: &csi.VolumeContentSource_Volume{Volume: &csi.VolumeContentSource_VolumeSource{VolumeId: handle}}}
}

func gib(n int64) int64 { return n << 30 }

func protoEqual(a, b *csi.CreateVolumeRequest) bool { return proto.Equal(a, b) }

// provenance returns the PV's provenance annotations only.
func provenance(pv *v1.PersistentVolume) map[string]string {
	out := map[string]string{}
	for _, k := range []string{SourceNamespaceAnnotation, SourceKindAnnotation, SourceNameAnnotation, ReferenceGrantAnnotation} {
		if v, ok := pv.Annotations[k]; ok {
			out[k] = v
		}
	}
	return out
}

// snapshotCaches hands the resolver listers over test indexers, as
// snapshotapi.Watcher does once the snapshot API is served and synced.
type snapshotCaches struct {
	snapshots snapshotlisters.VolumeSnapshotLister
	contents  snapshotlisters.VolumeSnapshotContentLister
}

func (s snapshotCaches) Listers() (snapshotlisters.VolumeSnapshotLister, snapshotlisters.VolumeSnapshotContentLister, error) {
	return s.snapshots, s.contents, nil
}
