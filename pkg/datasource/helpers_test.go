package datasource

import (
	"slices"
	"sync"
	"testing"

	snapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	snapshotlisters "github.com/kubernetes-csi/external-snapshotter/client/v8/listers/volumesnapshot/v1"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"

	"github.com/crossns/external-provisioner/pkg/snapshotapi"
)

const (
	driver = "hostpath.csi.k8s.io"
	gi     = int64(1 << 30)
)

// world is what the resolver's caches hold in one test case, and what it read.
type world struct {
	snapshots []*snapshotv1.VolumeSnapshot
	contents  []*snapshotv1.VolumeSnapshotContent
	claims    []*v1.PersistentVolumeClaim
	volumes   []*v1.PersistentVolume
	// fail makes reads of a kind ("VolumeSnapshot", "VolumeSnapshotContent",
	// "PersistentVolumeClaim", "PersistentVolume") return this error, as a
	// broken cache would.
	fail map[string]error
	// snapshotAPI is what asking for the snapshot caches returns instead of
	// them: the snapshot API not served, or its caches not synced yet.
	snapshotAPI error
}

// readLog records every read the resolver makes, as "Kind namespace" for
// namespaced kinds and "Kind name" for cluster-scoped ones.
type readLog struct {
	mu   sync.Mutex
	got  []string
	fail map[string]error
}

func (l *readLog) add(kind, where string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.got = append(l.got, kind+" "+where)
	return l.fail[kind]
}

func (l *readLog) reads() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.got)
}

// newResolver returns a resolver for driver over indexer-backed listers
// preloaded with w, wrapped so that every read is recorded in the returned log.
func newResolver(t *testing.T, w world) (*Resolver, *readLog) {
	t.Helper()
	log := &readLog{fail: w.fail}
	nsIndex := cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc}
	snaps := cache.NewIndexer(cache.MetaNamespaceKeyFunc, nsIndex)
	contents := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
	claims := cache.NewIndexer(cache.MetaNamespaceKeyFunc, nsIndex)
	volumes := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
	add := func(idx cache.Indexer, obj any) {
		if err := idx.Add(obj); err != nil {
			t.Fatalf("preloading cache: %v", err)
		}
	}
	for _, o := range w.snapshots {
		add(snaps, o)
	}
	for _, o := range w.contents {
		add(contents, o)
	}
	for _, o := range w.claims {
		add(claims, o)
	}
	for _, o := range w.volumes {
		add(volumes, o)
	}
	return &Resolver{
		DriverName: driver,
		Snapshots: snapshotapi.Fake{
			Snapshots: snapshotReads{snapshotlisters.NewVolumeSnapshotLister(snaps), log},
			Contents:  contentReads{snapshotlisters.NewVolumeSnapshotContentLister(contents), log},
			Err:       w.snapshotAPI,
		},
		Claims:  claimReads{corelisters.NewPersistentVolumeClaimLister(claims), log},
		Volumes: volumeReads{corelisters.NewPersistentVolumeLister(volumes), log},
	}, log
}

type snapshotReads struct {
	snapshotlisters.VolumeSnapshotLister
	log *readLog
}

func (s snapshotReads) VolumeSnapshots(ns string) snapshotlisters.VolumeSnapshotNamespaceLister {
	return snapshotNamespaceReads{s.VolumeSnapshotLister.VolumeSnapshots(ns), s.log, ns}
}

type snapshotNamespaceReads struct {
	snapshotlisters.VolumeSnapshotNamespaceLister
	log *readLog
	ns  string
}

func (s snapshotNamespaceReads) Get(name string) (*snapshotv1.VolumeSnapshot, error) {
	if err := s.log.add("VolumeSnapshot", s.ns); err != nil {
		return nil, err
	}
	return s.VolumeSnapshotNamespaceLister.Get(name)
}

type contentReads struct {
	snapshotlisters.VolumeSnapshotContentLister
	log *readLog
}

func (s contentReads) Get(name string) (*snapshotv1.VolumeSnapshotContent, error) {
	if err := s.log.add("VolumeSnapshotContent", name); err != nil {
		return nil, err
	}
	return s.VolumeSnapshotContentLister.Get(name)
}

type claimReads struct {
	corelisters.PersistentVolumeClaimLister
	log *readLog
}

func (s claimReads) PersistentVolumeClaims(ns string) corelisters.PersistentVolumeClaimNamespaceLister {
	return claimNamespaceReads{s.PersistentVolumeClaimLister.PersistentVolumeClaims(ns), s.log, ns}
}

type claimNamespaceReads struct {
	corelisters.PersistentVolumeClaimNamespaceLister
	log *readLog
	ns  string
}

func (s claimNamespaceReads) Get(name string) (*v1.PersistentVolumeClaim, error) {
	if err := s.log.add("PersistentVolumeClaim", s.ns); err != nil {
		return nil, err
	}
	return s.PersistentVolumeClaimNamespaceLister.Get(name)
}

type volumeReads struct {
	corelisters.PersistentVolumeLister
	log *readLog
}

func (s volumeReads) Get(name string) (*v1.PersistentVolume, error) {
	if err := s.log.add("PersistentVolume", name); err != nil {
		return nil, err
	}
	return s.PersistentVolumeLister.Get(name)
}

// readySnapshot is a snapshot of 1Gi, bound to content "content-<name>" and
// ready to use.
func readySnapshot(ns, name string, mods ...func(*snapshotv1.VolumeSnapshot)) *snapshotv1.VolumeSnapshot {
	size := resource.MustParse("1Gi")
	s := &snapshotv1.VolumeSnapshot{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID("uid-snap-" + name)},
		Spec: snapshotv1.VolumeSnapshotSpec{
			Source: snapshotv1.VolumeSnapshotSource{PersistentVolumeClaimName: ptr.To("origin")},
		},
		Status: &snapshotv1.VolumeSnapshotStatus{
			BoundVolumeSnapshotContentName: ptr.To("content-" + name),
			ReadyToUse:                     ptr.To(true),
			RestoreSize:                    &size,
		},
	}
	for _, m := range mods {
		m(s)
	}
	return s
}

// contentOf is the content bound to snap, taken by driver from a Filesystem
// volume, with snapshot handle "handle-<name>".
func contentOf(snap *snapshotv1.VolumeSnapshot, mods ...func(*snapshotv1.VolumeSnapshotContent)) *snapshotv1.VolumeSnapshotContent {
	c := &snapshotv1.VolumeSnapshotContent{
		ObjectMeta: metav1.ObjectMeta{Name: "content-" + snap.Name},
		Spec: snapshotv1.VolumeSnapshotContentSpec{
			VolumeSnapshotRef: v1.ObjectReference{Namespace: snap.Namespace, Name: snap.Name, UID: snap.UID},
			Driver:            driver,
			DeletionPolicy:    snapshotv1.VolumeSnapshotContentDelete,
			SourceVolumeMode:  ptr.To(v1.PersistentVolumeFilesystem),
		},
		Status: &snapshotv1.VolumeSnapshotContentStatus{SnapshotHandle: ptr.To("handle-" + snap.Name)},
	}
	for _, m := range mods {
		m(c)
	}
	return c
}

// boundClaim is a 1Gi claim bound to volume "pv-<namespace>-<name>".
func boundClaim(ns, name string, mods ...func(*v1.PersistentVolumeClaim)) *v1.PersistentVolumeClaim {
	c := &v1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID("uid-claim-" + ns + "-" + name)},
		Spec: v1.PersistentVolumeClaimSpec{
			VolumeName: "pv-" + ns + "-" + name,
			Resources:  v1.VolumeResourceRequirements{Requests: v1.ResourceList{v1.ResourceStorage: resource.MustParse("1Gi")}},
		},
		Status: v1.PersistentVolumeClaimStatus{Phase: v1.ClaimBound},
	}
	for _, m := range mods {
		m(c)
	}
	return c
}

// volumeOf is the CSI volume of driver bound to claim, with handle
// "vol-<namespace>-<name>".
func volumeOf(claim *v1.PersistentVolumeClaim, mods ...func(*v1.PersistentVolume)) *v1.PersistentVolume {
	pv := &v1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: claim.Spec.VolumeName},
		Spec: v1.PersistentVolumeSpec{
			PersistentVolumeSource: v1.PersistentVolumeSource{CSI: &v1.CSIPersistentVolumeSource{
				Driver: driver, VolumeHandle: "vol-" + claim.Namespace + "-" + claim.Name,
			}},
			ClaimRef: &v1.ObjectReference{Kind: "PersistentVolumeClaim", Namespace: claim.Namespace, Name: claim.Name, UID: claim.UID},
		},
		Status: v1.PersistentVolumeStatus{Phase: v1.VolumeBound},
	}
	for _, m := range mods {
		m(pv)
	}
	return pv
}

// pendingClaim is a new claim in ns named name whose dataSourceRef names
// kind/source in sourceNS (the claim's own namespace when sourceNS is "").
func pendingClaim(ns, name, kind, sourceNS, source string) *v1.PersistentVolumeClaim {
	ref := &v1.TypedObjectReference{Kind: kind, Name: source}
	if kind == SnapshotKind {
		ref.APIGroup = ptr.To(SnapshotGroup)
	}
	if sourceNS != "" {
		ref.Namespace = ptr.To(sourceNS)
	}
	return &v1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID("uid-claim-" + ns + "-" + name)},
		Spec: v1.PersistentVolumeClaimSpec{
			DataSourceRef: ref,
			Resources:     v1.VolumeResourceRequirements{Requests: v1.ResourceList{v1.ResourceStorage: resource.MustParse("1Gi")}},
		},
		Status: v1.PersistentVolumeClaimStatus{Phase: v1.ClaimPending},
	}
}

// wantFailure checks that err is an *Error of the kind and reason given.
func wantFailure(t *testing.T, err error, kind FailureKind, reason string) *Error {
	t.Helper()
	e, ok := AsError(err)
	if !ok {
		t.Fatalf("error = %v (%T), want a *datasource.Error with reason %s", err, err, reason)
	}
	if e.Kind != kind || e.Reason != reason {
		t.Fatalf("error kind/reason = %v/%s, want %v/%s (message: %s)", e.Kind, e.Reason, kind, reason, e.Message)
	}
	return e
}
