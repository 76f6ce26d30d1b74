package csidriver

import (
	"context"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

func snapshotSource(id string) *csi.VolumeContentSource {
	return &csi.VolumeContentSource{Type: &csi.VolumeContentSource_Snapshot{
		Snapshot: &csi.VolumeContentSource_SnapshotSource{SnapshotId: id}}}
}

func volumeSource(id string) *csi.VolumeContentSource {
	return &csi.VolumeContentSource{Type: &csi.VolumeContentSource_Volume{
		Volume: &csi.VolumeContentSource_VolumeSource{VolumeId: id}}}
}

// populate writes a small tree with nesting, modes and a symlink.
func populate(t *testing.T, dir string) {
	t.Helper()
	writeFile(t, filepath.Join(dir, "a.txt"), "alpha")
	writeFile(t, filepath.Join(dir, "sub", "deeper", "b.bin"), "\x00\x01beta")
	if err := os.Chmod(filepath.Join(dir, "sub"), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("a.txt", filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
}

func TestCopySemantics(t *testing.T) {
	td := startDriver(t, Config{})
	ctx := context.Background()

	src := createVolume(t, td, &csi.CreateVolumeRequest{Name: "src", CapacityRange: &csi.CapacityRange{RequiredBytes: 8 << 20}})
	if src.GetVolumeContext()["path"] != td.VolumePath(src.GetVolumeId()) {
		t.Errorf("volume_context %v does not point at the volume directory", src.GetVolumeContext())
	}
	populate(t, td.VolumePath(src.GetVolumeId()))
	original := readTree(t, td.VolumePath(src.GetVolumeId()))

	snapResp, err := td.ctrl.CreateSnapshot(ctx, &csi.CreateSnapshotRequest{Name: "snap", SourceVolumeId: src.GetVolumeId()})
	if err != nil {
		t.Fatal(err)
	}
	snap := snapResp.GetSnapshot()
	if !snap.GetReadyToUse() || snap.GetSizeBytes() != src.GetCapacityBytes() || snap.GetSourceVolumeId() != src.GetVolumeId() {
		t.Errorf("snapshot %v: want ready, size %d, source %s", snap, src.GetCapacityBytes(), src.GetVolumeId())
	}

	// Changing the source afterwards must not leak into the snapshot.
	writeFile(t, filepath.Join(td.VolumePath(src.GetVolumeId()), "a.txt"), "changed")
	writeFile(t, filepath.Join(td.VolumePath(src.GetVolumeId()), "new.txt"), "new")
	changed := readTree(t, td.VolumePath(src.GetVolumeId()))

	tests := []struct {
		name   string
		source *csi.VolumeContentSource
		want   map[string]string
	}{
		{"restore from snapshot", snapshotSource(snap.GetSnapshotId()), original},
		{"clone of volume", volumeSource(src.GetVolumeId()), changed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := createVolume(t, td, &csi.CreateVolumeRequest{
				Name:                tc.name,
				CapacityRange:       &csi.CapacityRange{RequiredBytes: 8 << 20},
				VolumeContentSource: tc.source,
			})
			if !proto.Equal(v.GetContentSource(), tc.source) {
				t.Errorf("content_source %v, want %v", v.GetContentSource(), tc.source)
			}
			if got := readTree(t, td.VolumePath(v.GetVolumeId())); !maps.Equal(got, tc.want) {
				t.Errorf("files %v, want %v", got, tc.want)
			}
		})
	}
	if got := readTree(t, td.SnapshotPath(snap.GetSnapshotId())); !maps.Equal(got, original) {
		t.Errorf("snapshot files %v, want %v", got, original)
	}

	// Deleting removes the directories; repeating it is fine.
	for i := 0; i < 2; i++ {
		if _, err := td.ctrl.DeleteSnapshot(ctx, &csi.DeleteSnapshotRequest{SnapshotId: snap.GetSnapshotId()}); err != nil {
			t.Fatal(err)
		}
		if _, err := td.ctrl.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: src.GetVolumeId()}); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range []string{td.SnapshotPath(snap.GetSnapshotId()), td.VolumePath(src.GetVolumeId())} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s still exists (%v)", p, err)
		}
	}
}

func TestCreateVolumeRules(t *testing.T) {
	td := startDriver(t, Config{Capacity: "100Mi"})
	ctx := context.Background()
	src := createVolume(t, td, &csi.CreateVolumeRequest{Name: "src", CapacityRange: &csi.CapacityRange{RequiredBytes: 4 << 20}})
	snapResp, err := td.ctrl.CreateSnapshot(ctx, &csi.CreateSnapshotRequest{Name: "snap", SourceVolumeId: src.GetVolumeId()})
	if err != nil {
		t.Fatal(err)
	}
	snapID := snapResp.GetSnapshot().GetSnapshotId()

	tests := []struct {
		name     string
		req      *csi.CreateVolumeRequest
		wantCode codes.Code
		wantSize int64
	}{
		{"default size", &csi.CreateVolumeRequest{Name: "v1"}, codes.OK, DefaultVolumeSize},
		{"exact size, no rounding", &csi.CreateVolumeRequest{Name: "v2", CapacityRange: &csi.CapacityRange{RequiredBytes: 12345}}, codes.OK, 12345},
		{"small limit without required", &csi.CreateVolumeRequest{Name: "v3", CapacityRange: &csi.CapacityRange{LimitBytes: 4096}}, codes.OK, 4096},
		{"idempotent repeat", &csi.CreateVolumeRequest{Name: "src", CapacityRange: &csi.CapacityRange{RequiredBytes: 4 << 20}}, codes.OK, 4 << 20},
		{"repeat with larger size", &csi.CreateVolumeRequest{Name: "src", CapacityRange: &csi.CapacityRange{RequiredBytes: 5 << 20}}, codes.AlreadyExists, 0},
		{"repeat with other parameters", &csi.CreateVolumeRequest{Name: "src", CapacityRange: &csi.CapacityRange{RequiredBytes: 4 << 20}, Parameters: map[string]string{"x": "y"}}, codes.AlreadyExists, 0},
		{"repeat as block", &csi.CreateVolumeRequest{Name: "src", CapacityRange: &csi.CapacityRange{RequiredBytes: 4 << 20}, VolumeCapabilities: blockCap()}, codes.AlreadyExists, 0},
		{"no name", &csi.CreateVolumeRequest{}, codes.InvalidArgument, 0},
		{"required above limit", &csi.CreateVolumeRequest{Name: "v4", CapacityRange: &csi.CapacityRange{RequiredBytes: 10, LimitBytes: 5}}, codes.InvalidArgument, 0},
		{"mixed access types", &csi.CreateVolumeRequest{Name: "v5", VolumeCapabilities: append(mountCap(), blockCap()...)}, codes.InvalidArgument, 0},
		{"missing snapshot", &csi.CreateVolumeRequest{Name: "v6", VolumeContentSource: snapshotSource("0123456789abcdef0123456789abcdef")}, codes.NotFound, 0},
		{"missing source volume", &csi.CreateVolumeRequest{Name: "v7", VolumeContentSource: volumeSource("../../etc")}, codes.NotFound, 0},
		{"smaller than snapshot", &csi.CreateVolumeRequest{Name: "v8", CapacityRange: &csi.CapacityRange{RequiredBytes: 1 << 20}, VolumeContentSource: snapshotSource(snapID)}, codes.OutOfRange, 0},
		{"smaller than source volume", &csi.CreateVolumeRequest{Name: "v9", CapacityRange: &csi.CapacityRange{RequiredBytes: 1 << 20}, VolumeContentSource: volumeSource(src.GetVolumeId())}, codes.OutOfRange, 0},
		{"limit below source", &csi.CreateVolumeRequest{Name: "v10", CapacityRange: &csi.CapacityRange{LimitBytes: 1 << 20}, VolumeContentSource: snapshotSource(snapID)}, codes.OutOfRange, 0},
		{"no size takes source size", &csi.CreateVolumeRequest{Name: "v11", VolumeContentSource: snapshotSource(snapID)}, codes.OK, 4 << 20},
		{"more than capacity", &csi.CreateVolumeRequest{Name: "v12", CapacityRange: &csi.CapacityRange{RequiredBytes: 1 << 30}}, codes.ResourceExhausted, 0},
		{"block volume", &csi.CreateVolumeRequest{Name: "v13", VolumeCapabilities: blockCap()}, codes.OK, DefaultVolumeSize},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.req.VolumeCapabilities == nil {
				tc.req.VolumeCapabilities = mountCap()
			}
			resp, err := td.ctrl.CreateVolume(ctx, tc.req)
			if status.Code(err) != tc.wantCode {
				t.Fatalf("code %v (%v), want %v", status.Code(err), err, tc.wantCode)
			}
			if err == nil && resp.GetVolume().GetCapacityBytes() != tc.wantSize {
				t.Errorf("capacity %d, want %d", resp.GetVolume().GetCapacityBytes(), tc.wantSize)
			}
		})
	}

	// The block volume is recorded as such and validated accordingly.
	var blockID string
	for _, v := range td.Volumes() {
		if v.Name == "v13" {
			blockID = v.ID
			if v.AccessType != AccessTypeBlock {
				t.Errorf("v13 access type %q", v.AccessType)
			}
		}
	}
	for _, vc := range []struct {
		caps      []*csi.VolumeCapability
		confirmed bool
	}{{blockCap(), true}, {mountCap(), false}} {
		resp, err := td.ctrl.ValidateVolumeCapabilities(ctx, &csi.ValidateVolumeCapabilitiesRequest{VolumeId: blockID, VolumeCapabilities: vc.caps})
		if err != nil {
			t.Fatal(err)
		}
		if (resp.GetConfirmed() != nil) != vc.confirmed {
			t.Errorf("ValidateVolumeCapabilities(%v) = %v, want confirmed=%v", vc.caps, resp, vc.confirmed)
		}
	}

	// GetCapacity reports what is left.
	var used int64
	for _, v := range td.Volumes() {
		used += v.CapacityBytes
	}
	capResp, err := td.ctrl.GetCapacity(ctx, &csi.GetCapacityRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if want := int64(100<<20) - used; capResp.GetAvailableCapacity() != want {
		t.Errorf("available %d, want %d", capResp.GetAvailableCapacity(), want)
	}
}

func TestTopology(t *testing.T) {
	zoneA := map[string]string{"zone": "a", "rack": "r1"}
	topo := func(segs ...map[string]string) []*csi.Topology {
		var out []*csi.Topology
		for _, s := range segs {
			out = append(out, &csi.Topology{Segments: s})
		}
		return out
	}
	tests := []struct {
		name     string
		ours     map[string]string
		req      *csi.TopologyRequirement
		wantCode codes.Code
	}{
		{"no requirement", zoneA, nil, codes.OK},
		{"exact requisite", zoneA, &csi.TopologyRequirement{Requisite: topo(zoneA)}, codes.OK},
		{"one of several requisites", zoneA, &csi.TopologyRequirement{Requisite: topo(map[string]string{"zone": "b"}, map[string]string{"zone": "a"})}, codes.OK},
		{"no requisite matches", zoneA, &csi.TopologyRequirement{Requisite: topo(map[string]string{"zone": "b"})}, codes.ResourceExhausted},
		{"unknown key", zoneA, &csi.TopologyRequirement{Requisite: topo(map[string]string{"region": "a"})}, codes.ResourceExhausted},
		{"preferred only, mismatch", zoneA, &csi.TopologyRequirement{Preferred: topo(map[string]string{"zone": "b"})}, codes.ResourceExhausted},
		{"requisite wins over preferred", zoneA, &csi.TopologyRequirement{Requisite: topo(zoneA), Preferred: topo(map[string]string{"zone": "b"})}, codes.OK},
		{"driver without topology ignores it", nil, &csi.TopologyRequirement{Requisite: topo(map[string]string{"zone": "b"})}, codes.OK},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			td := startDriver(t, Config{Topology: tc.ours})
			ctx := context.Background()
			resp, err := td.ctrl.CreateVolume(ctx, &csi.CreateVolumeRequest{
				Name: "pvc", VolumeCapabilities: mountCap(), AccessibilityRequirements: tc.req,
			})
			if status.Code(err) != tc.wantCode {
				t.Fatalf("code %v (%v), want %v", status.Code(err), err, tc.wantCode)
			}
			if err != nil {
				return
			}
			var got []map[string]string
			for _, at := range resp.GetVolume().GetAccessibleTopology() {
				got = append(got, at.GetSegments())
			}
			var want []map[string]string
			if len(tc.ours) > 0 {
				want = []map[string]string{tc.ours}
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("accessible_topology %v, want %v", got, want)
			}

			caps, err := td.ident.GetPluginCapabilities(ctx, &csi.GetPluginCapabilitiesRequest{})
			if err != nil {
				t.Fatal(err)
			}
			hasConstraints := false
			for _, c := range caps.GetCapabilities() {
				if c.GetService().GetType() == csi.PluginCapability_Service_VOLUME_ACCESSIBILITY_CONSTRAINTS {
					hasConstraints = true
				}
			}
			if hasConstraints != (len(tc.ours) > 0) {
				t.Errorf("VOLUME_ACCESSIBILITY_CONSTRAINTS advertised = %v with topology %v", hasConstraints, tc.ours)
			}
		})
	}

	// GetCapacity is zero for topologies we are not part of.
	td := startDriver(t, Config{Topology: zoneA, Capacity: "1Gi"})
	for seg, want := range map[string]int64{"a": 1 << 30, "b": 0} {
		resp, err := td.ctrl.GetCapacity(context.Background(), &csi.GetCapacityRequest{
			AccessibleTopology: &csi.Topology{Segments: map[string]string{"zone": seg}},
		})
		if err != nil {
			t.Fatal(err)
		}
		if resp.GetAvailableCapacity() != want {
			t.Errorf("GetCapacity(zone=%s) = %d, want %d", seg, resp.GetAvailableCapacity(), want)
		}
	}
}

func TestRestartPersistence(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "data")
	ctx := context.Background()

	first := startDriver(t, Config{DataDir: dataDir, Capacity: "1Gi"})
	vol := createVolume(t, first, &csi.CreateVolumeRequest{
		Name: "pvc-keep", CapacityRange: &csi.CapacityRange{RequiredBytes: 3 << 20},
		Parameters: map[string]string{"tier": "gold"}, VolumeCapabilities: blockCap(),
	})
	writeFile(t, filepath.Join(first.VolumePath(vol.GetVolumeId()), "data"), "persisted")
	snapResp, err := first.ctrl.CreateSnapshot(ctx, &csi.CreateSnapshotRequest{Name: "snap-keep", SourceVolumeId: vol.GetVolumeId()})
	if err != nil {
		t.Fatal(err)
	}
	gone := createVolume(t, first, &csi.CreateVolumeRequest{Name: "pvc-gone"})
	if _, err := first.ctrl.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: gone.GetVolumeId()}); err != nil {
		t.Fatal(err)
	}
	first.stop()

	// Leftovers of an operation interrupted by a crash must not survive.
	orphan := filepath.Join(dataDir, volumesDir, newID())
	writeFile(t, filepath.Join(orphan, "half"), "x")

	second := startDriver(t, Config{DataDir: dataDir, Capacity: "1Gi"})
	again := createVolume(t, second, &csi.CreateVolumeRequest{
		Name: "pvc-keep", CapacityRange: &csi.CapacityRange{RequiredBytes: 3 << 20},
		Parameters: map[string]string{"tier": "gold"}, VolumeCapabilities: blockCap(),
	})
	if again.GetVolumeId() != vol.GetVolumeId() {
		t.Errorf("volume ID after restart %s, want %s", again.GetVolumeId(), vol.GetVolumeId())
	}
	if _, err := second.ctrl.CreateVolume(ctx, &csi.CreateVolumeRequest{
		Name: "pvc-keep", CapacityRange: &csi.CapacityRange{RequiredBytes: 3 << 20}, VolumeCapabilities: blockCap(),
	}); status.Code(err) != codes.AlreadyExists {
		t.Errorf("incompatible repeat after restart: %v, want AlreadyExists", err)
	}
	list, err := second.ctrl.ListSnapshots(ctx, &csi.ListSnapshotsRequest{SnapshotId: snapResp.GetSnapshot().GetSnapshotId()})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.GetEntries()) != 1 || !list.GetEntries()[0].GetSnapshot().GetCreationTime().AsTime().Equal(snapResp.GetSnapshot().GetCreationTime().AsTime()) {
		t.Errorf("snapshot after restart: %v, want %v", list.GetEntries(), snapResp.GetSnapshot())
	}
	restored := createVolume(t, second, &csi.CreateVolumeRequest{
		Name: "pvc-restored", CapacityRange: &csi.CapacityRange{RequiredBytes: 3 << 20},
		VolumeContentSource: snapshotSource(snapResp.GetSnapshot().GetSnapshotId()), VolumeCapabilities: blockCap(),
	})
	if data, err := os.ReadFile(filepath.Join(second.VolumePath(restored.GetVolumeId()), "data")); err != nil || string(data) != "persisted" {
		t.Errorf("restored data %q (%v)", data, err)
	}
	if _, err := os.Stat(orphan); !os.IsNotExist(err) {
		t.Errorf("orphan directory survived restart: %v", err)
	}
	if _, ok := second.store.getVolume(gone.GetVolumeId()); ok {
		t.Error("deleted volume came back after restart")
	}
	capResp, err := second.ctrl.GetCapacity(ctx, &csi.GetCapacityRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if want := int64(1<<30 - 6<<20); capResp.GetAvailableCapacity() != want {
		t.Errorf("available after restart %d, want %d", capResp.GetAvailableCapacity(), want)
	}

	vols, snaps, err := ReadDataDir(dataDir)
	if err != nil {
		t.Fatal(err)
	}
	if len(vols) != 2 || len(snaps) != 1 || snaps[0].SourceVolumeID != vol.GetVolumeId() {
		t.Errorf("ReadDataDir = %+v, %+v", vols, snaps)
	}
}

func TestListSnapshotsPagination(t *testing.T) {
	td := startDriver(t, Config{})
	ctx := context.Background()
	vol := createVolume(t, td, &csi.CreateVolumeRequest{Name: "src"})
	other := createVolume(t, td, &csi.CreateVolumeRequest{Name: "other"})
	for _, name := range []string{"s1", "s2", "s3", "s4", "s5"} {
		if _, err := td.ctrl.CreateSnapshot(ctx, &csi.CreateSnapshotRequest{Name: name, SourceVolumeId: vol.GetVolumeId()}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := td.ctrl.CreateSnapshot(ctx, &csi.CreateSnapshotRequest{Name: "o1", SourceVolumeId: other.GetVolumeId()}); err != nil {
		t.Fatal(err)
	}

	// Page through with two entries per page, deleting the last entry of
	// each page before asking for the next one: nothing may be skipped.
	seen := map[string]bool{}
	token := ""
	for pages := 0; ; pages++ {
		if pages > 10 {
			t.Fatal("pagination does not terminate")
		}
		resp, err := td.ctrl.ListSnapshots(ctx, &csi.ListSnapshotsRequest{MaxEntries: 2, StartingToken: token, SourceVolumeId: vol.GetVolumeId()})
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range resp.GetEntries() {
			id := e.GetSnapshot().GetSnapshotId()
			if seen[id] {
				t.Errorf("snapshot %s listed twice", id)
			}
			seen[id] = true
		}
		if resp.GetNextToken() == "" {
			break
		}
		last := resp.GetEntries()[len(resp.GetEntries())-1].GetSnapshot().GetSnapshotId()
		if _, err := td.ctrl.DeleteSnapshot(ctx, &csi.DeleteSnapshotRequest{SnapshotId: last}); err != nil {
			t.Fatal(err)
		}
		token = resp.GetNextToken()
	}
	if len(seen) != 5 {
		t.Errorf("listed %d snapshots of src, want 5", len(seen))
	}

	for _, tc := range []struct {
		req  *csi.ListSnapshotsRequest
		code codes.Code
	}{
		{&csi.ListSnapshotsRequest{StartingToken: "not-a-token"}, codes.Aborted},
		{&csi.ListSnapshotsRequest{MaxEntries: -1}, codes.InvalidArgument},
	} {
		if _, err := td.ctrl.ListSnapshots(ctx, tc.req); status.Code(err) != tc.code {
			t.Errorf("ListSnapshots(%v): %v, want %v", tc.req, err, tc.code)
		}
	}
}
