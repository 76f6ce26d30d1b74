package provisioner

import (
	"testing"

	snapshotlisters "github.com/kubernetes-csi/external-snapshotter/client/v8/listers/volumesnapshot/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/crossns/external-provisioner/pkg/datasource"
	"github.com/crossns/external-provisioner/pkg/referencegrant"
)

// BenchmarkBuildRequest measures building the CreateVolumeRequest of one
// claim in "dev" restoring a VolumeSnapshot in "prod": buildRequest (class
// parameters, name, capacity, capabilities, secret templates) and Resolve
// through a real datasource.Resolver over informer indexers (grant check,
// snapshot and content lookups, every source check). That is the CPU work
// Provision does per claim before the secret read, source protection and
// the CSI call. The grant decision comes from referencegrant.Fake, as in the
// package's unit tests, and from the real Index the sidecar runs.
func BenchmarkBuildRequest(b *testing.B) {
	claim := newClaim("dev", "copy", fromSnapshot("prod", "nightly"))
	class := newClass(map[string]string{"type": "ssd", "csi.storage.k8s.io/fstype": "ext4"})
	ref := grantRef("dev", datasource.SnapshotGroup, datasource.SnapshotKind, "prod", "nightly")

	newFake := func() referencegrant.Checker {
		f := referencegrant.NewFake()
		f.Allow(ref, "allow-dev")
		return f
	}
	newIndex := func() referencegrant.Checker {
		x := referencegrant.NewIndex()
		g := &gatewayv1.ReferenceGrant{
			ObjectMeta: metav1.ObjectMeta{Namespace: "prod", Name: "allow-dev", ResourceVersion: "1"},
			Spec: gatewayv1.ReferenceGrantSpec{
				From: []gatewayv1.ReferenceGrantFrom{{Group: "", Kind: datasource.ClaimKind, Namespace: "dev"}},
				To:   []gatewayv1.ReferenceGrantTo{{Group: datasource.SnapshotGroup, Kind: datasource.SnapshotKind, Name: ptr.To(gatewayv1.ObjectName("nightly"))}},
			},
		}
		if err := x.Upsert(g); err != nil {
			b.Fatal(err)
		}
		return x
	}
	for _, bc := range []struct {
		name   string
		grants func() referencegrant.Checker
		// reset, when set, is how often the checker is replaced: the Fake
		// records every reference it checks, which would otherwise grow
		// without bound and show up as allocations of the code under test.
		reset int
	}{
		{name: "grants=fake", grants: newFake, reset: 1024},
		{name: "grants=index", grants: newIndex},
	} {
		b.Run(bc.name, func(b *testing.B) {
			snapshots := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
			contents := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
			if err := snapshots.Add(readySnapshot("prod", "nightly", "content-1", "1Gi")); err != nil {
				b.Fatal(err)
			}
			if err := contents.Add(boundContent("content-1", "prod", "nightly", "snap-handle-1")); err != nil {
				b.Fatal(err)
			}
			resolver := &datasource.Resolver{
				DriverName:                  driverName,
				CrossNamespace:              true,
				PreventVolumeModeConversion: true,
				Grants:                      bc.grants(),
				Snapshots:                   snapshotCaches{snapshotlisters.NewVolumeSnapshotLister(snapshots), snapshotlisters.NewVolumeSnapshotContentLister(contents)},
			}
			p := New(Config{DriverName: driverName, Identity: identity, VolumeNamePrefix: "pvc", VolumeNameUUIDLength: -1, Sources: resolver})
			pvName := "pvc-" + string(claim.UID)
			mode := datasource.ModeOf(claim.Spec.VolumeMode)

			b.ReportAllocs()
			i := 0
			for b.Loop() {
				req, _, err := p.buildRequest(claim, class, pvName)
				if err != nil {
					b.Fatal(err)
				}
				src, err := p.Sources.Resolve(claim, datasource.Request{Bytes: req.CapacityRange.RequiredBytes, Mode: mode})
				if err != nil {
					b.Fatal(err)
				}
				if src == nil || src.Grant != "allow-dev" {
					b.Fatalf("resolved %+v, want the snapshot under grant allow-dev", src)
				}
				req.VolumeContentSource = src.Content
				if i++; bc.reset > 0 && i%bc.reset == 0 {
					b.StopTimer()
					resolver.Grants = bc.grants()
					b.StartTimer()
				}
			}
		})
	}
}
