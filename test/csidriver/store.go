package csidriver

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/klog/v2"
)

// On-disk layout below the data directory. The JSON file of an object is its
// commit record: data is first built under tmp/, renamed into place, and only
// then is the JSON written. Deletion removes the JSON first. A directory
// without JSON is therefore always an unfinished operation and safe to drop.
const (
	volumesDir   = "volumes"
	snapshotsDir = "snapshots"
	tmpDir       = "tmp"

	// DefaultVolumeSize is the capacity of a volume created without
	// required_bytes (and without a larger content source).
	DefaultVolumeSize int64 = 1 << 20

	// AccessTypeMount and AccessTypeBlock are the recorded access types.
	// Both are backed by a plain directory.
	AccessTypeMount = "mount"
	AccessTypeBlock = "block"
)

// Volume is the persisted metadata of a volume, stored as
// <data-dir>/volumes/<id>.json next to the data directory <id>/.
type Volume struct {
	ID            string            `json:"id"`
	Name          string            `json:"name"`
	CapacityBytes int64             `json:"capacityBytes"`
	AccessType    string            `json:"accessType"`
	Parameters    map[string]string `json:"parameters,omitempty"`
	// MutableParameters are the volume's current mutable parameters: those
	// of CreateVolume (a VolumeAttributesClass's), as changed since by
	// ControllerModifyVolume.
	MutableParameters map[string]string `json:"mutableParameters,omitempty"`
	Source            *Source           `json:"source,omitempty"`
	Topology          map[string]string `json:"topology,omitempty"`
	CreationTime      time.Time         `json:"creationTime"`
}

// Source records what a volume was pre-populated from; at most one is set.
type Source struct {
	SnapshotID string `json:"snapshotID,omitempty"`
	VolumeID   string `json:"volumeID,omitempty"`
}

// Snapshot is the persisted metadata of a snapshot, stored as
// <data-dir>/snapshots/<id>.json next to the data directory <id>/.
type Snapshot struct {
	ID             string            `json:"id"`
	Name           string            `json:"name"`
	SourceVolumeID string            `json:"sourceVolumeID"`
	SizeBytes      int64             `json:"sizeBytes"`
	Parameters     map[string]string `json:"parameters,omitempty"`
	CreationTime   time.Time         `json:"creationTime"`
	ReadyToUse     bool              `json:"readyToUse"`
}

// volumeSpec is a validated CreateVolume request as the store needs it.
type volumeSpec struct {
	Name              string
	RequiredBytes     int64
	LimitBytes        int64
	AccessType        string
	Parameters        map[string]string
	MutableParameters map[string]string
	Source            *Source
	Topology          map[string]string
}

// store owns the data directory. One mutex serialises all mutations: the
// driver is a test fixture, and strict serialisation makes name idempotency
// and capacity accounting trivially correct even while files are copied.
type store struct {
	root     string
	capacity int64

	mu            sync.Mutex
	volumes       map[string]*Volume
	volumeNames   map[string]string
	snapshots     map[string]*Snapshot
	snapshotNames map[string]string
}

func openStore(root string, capacity int64) (*store, error) {
	s := &store{
		root:          root,
		capacity:      capacity,
		volumes:       map[string]*Volume{},
		volumeNames:   map[string]string{},
		snapshots:     map[string]*Snapshot{},
		snapshotNames: map[string]string{},
	}
	// Unfinished operations of a previous run live only in tmp/.
	if err := os.RemoveAll(filepath.Join(root, tmpDir)); err != nil {
		return nil, fmt.Errorf("cleaning %s: %w", filepath.Join(root, tmpDir), err)
	}
	for _, d := range []string{volumesDir, snapshotsDir, tmpDir} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			return nil, fmt.Errorf("creating data directory: %w", err)
		}
	}
	vols, snaps, err := loadObjects(root)
	if err != nil {
		return nil, err
	}
	for _, v := range vols {
		s.volumes[v.ID] = v
		s.volumeNames[v.Name] = v.ID
	}
	for _, sn := range snaps {
		s.snapshots[sn.ID] = sn
		s.snapshotNames[sn.Name] = sn.ID
	}
	if err := removeOrphans(filepath.Join(root, volumesDir), s.hasVolume); err != nil {
		return nil, err
	}
	if err := removeOrphans(filepath.Join(root, snapshotsDir), s.hasSnapshot); err != nil {
		return nil, err
	}
	klog.InfoS("Opened data directory", "path", root, "volumes", len(vols), "snapshots", len(snaps))
	return s, nil
}

// ReadDataDir returns the volumes and snapshots recorded in a data directory
// without modifying it, so that out-of-process tests can inspect the state of
// a running driver binary.
func ReadDataDir(root string) ([]Volume, []Snapshot, error) {
	vols, snaps, err := loadObjects(root)
	if err != nil {
		return nil, nil, err
	}
	outV := make([]Volume, 0, len(vols))
	for _, v := range vols {
		outV = append(outV, *v)
	}
	outS := make([]Snapshot, 0, len(snaps))
	for _, sn := range snaps {
		outS = append(outS, *sn)
	}
	slices.SortFunc(outV, func(a, b Volume) int { return strings.Compare(a.ID, b.ID) })
	slices.SortFunc(outS, func(a, b Snapshot) int { return strings.Compare(a.ID, b.ID) })
	return outV, outS, nil
}

func loadObjects(root string) ([]*Volume, []*Snapshot, error) {
	var vols []*Volume
	err := loadJSONDir(filepath.Join(root, volumesDir), func(data []byte, path string) error {
		v := &Volume{}
		if err := json.Unmarshal(data, v); err != nil {
			return fmt.Errorf("decoding %s: %w", path, err)
		}
		vols = append(vols, v)
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	var snaps []*Snapshot
	err = loadJSONDir(filepath.Join(root, snapshotsDir), func(data []byte, path string) error {
		sn := &Snapshot{}
		if err := json.Unmarshal(data, sn); err != nil {
			return fmt.Errorf("decoding %s: %w", path, err)
		}
		snaps = append(snaps, sn)
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	return vols, snaps, nil
}

// loadJSONDir calls decode for every <id>.json whose data directory exists.
// Metadata without data cannot be served, so it is reported and skipped.
func loadJSONDir(dir string, decode func(data []byte, path string) error) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading %s: %w", dir, err)
	}
	for _, e := range entries {
		id, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok || e.IsDir() || !validID(id) {
			continue
		}
		path := filepath.Join(dir, e.Name())
		if fi, err := os.Stat(filepath.Join(dir, id)); err != nil || !fi.IsDir() {
			klog.ErrorS(err, "Skipping metadata without data directory", "path", path)
			continue
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("reading %s: %w", path, err)
		}
		if err := decode(data, path); err != nil {
			return err
		}
	}
	return nil
}

// removeOrphans deletes data directories whose JSON commit record is missing.
func removeOrphans(dir string, known func(id string) bool) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("reading %s: %w", dir, err)
	}
	for _, e := range entries {
		if !e.IsDir() || known(e.Name()) {
			continue
		}
		path := filepath.Join(dir, e.Name())
		klog.InfoS("Removing data of unfinished operation", "path", path)
		if err := os.RemoveAll(path); err != nil {
			return fmt.Errorf("removing orphan %s: %w", path, err)
		}
	}
	return nil
}

func (s *store) hasVolume(id string) bool   { _, ok := s.volumes[id]; return ok }
func (s *store) hasSnapshot(id string) bool { _, ok := s.snapshots[id]; return ok }

func (s *store) volumeDir(id string) string   { return filepath.Join(s.root, volumesDir, id) }
func (s *store) snapshotDir(id string) string { return filepath.Join(s.root, snapshotsDir, id) }

// newID returns 32 hex characters. IDs become path elements, so they are
// only ever generated here and never taken from a request.
func newID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b) // crypto/rand.Read never returns an error.
	return hex.EncodeToString(b)
}

func validID(id string) bool {
	if len(id) != 32 {
		return false
	}
	_, err := hex.DecodeString(id)
	return err == nil && strings.ToLower(id) == id
}

// usedBytesLocked is the sum of all volume capacities. Snapshots are not
// counted: GetCapacity reports space for new volumes.
func (s *store) usedBytesLocked() int64 {
	var used int64
	for _, v := range s.volumes {
		used += v.CapacityBytes
	}
	return used
}

func (s *store) availableBytes() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return max(s.capacity-s.usedBytesLocked(), 0)
}

func (s *store) createVolume(spec volumeSpec) (*Volume, error) {
	s.mu.Lock()
	defer s.mu.Unlock()

	if id, ok := s.volumeNames[spec.Name]; ok {
		v := s.volumes[id]
		if reason := volumeMismatch(v, spec); reason != "" {
			return nil, status.Errorf(codes.AlreadyExists, "volume %q already exists with different properties: %s", spec.Name, reason)
		}
		return cloneVolume(v), nil
	}

	var srcDir string
	var srcSize int64
	switch {
	case spec.Source != nil && spec.Source.SnapshotID != "":
		sn, ok := s.snapshots[spec.Source.SnapshotID]
		if !ok {
			return nil, status.Errorf(codes.NotFound, "source snapshot %q not found", spec.Source.SnapshotID)
		}
		srcDir, srcSize = s.snapshotDir(sn.ID), sn.SizeBytes
	case spec.Source != nil && spec.Source.VolumeID != "":
		src, ok := s.volumes[spec.Source.VolumeID]
		if !ok {
			return nil, status.Errorf(codes.NotFound, "source volume %q not found", spec.Source.VolumeID)
		}
		srcDir, srcSize = s.volumeDir(src.ID), src.CapacityBytes
	}

	capacity, err := pickCapacity(spec.RequiredBytes, spec.LimitBytes, srcSize)
	if err != nil {
		return nil, err
	}
	if avail := s.capacity - s.usedBytesLocked(); capacity > avail {
		return nil, status.Errorf(codes.ResourceExhausted, "requested %d bytes, only %d of %d bytes available", capacity, avail, s.capacity)
	}

	v := &Volume{
		ID:                newID(),
		Name:              spec.Name,
		CapacityBytes:     capacity,
		AccessType:        spec.AccessType,
		Parameters:        maps.Clone(spec.Parameters),
		MutableParameters: maps.Clone(spec.MutableParameters),
		Source:            spec.Source,
		Topology:          maps.Clone(spec.Topology),
		CreationTime:      time.Now().UTC(),
	}
	if err := s.materialize(srcDir, s.volumeDir(v.ID)); err != nil {
		return nil, status.Errorf(codes.Internal, "creating volume data: %v", err)
	}
	if err := s.writeMeta(filepath.Join(s.root, volumesDir, v.ID+".json"), v); err != nil {
		_ = os.RemoveAll(s.volumeDir(v.ID))
		return nil, status.Errorf(codes.Internal, "writing volume metadata: %v", err)
	}
	s.volumes[v.ID] = v
	s.volumeNames[v.Name] = v.ID
	klog.InfoS("Created volume", "volumeID", v.ID, "name", v.Name, "capacity", v.CapacityBytes, "source", srcDir)
	return cloneVolume(v), nil
}

// pickCapacity applies the sizing rules: exactly required_bytes when given,
// otherwise the larger of the default and the source, bounded by the limit.
func pickCapacity(required, limit, srcSize int64) (int64, error) {
	capacity := required
	if capacity == 0 {
		capacity = max(DefaultVolumeSize, srcSize)
		if limit > 0 && capacity > limit {
			capacity = limit
		}
	}
	if capacity < srcSize {
		// The CSI spec names OUT_OF_RANGE for "smaller than the source".
		return 0, status.Errorf(codes.OutOfRange, "capacity %d bytes is smaller than the source's %d bytes", capacity, srcSize)
	}
	return capacity, nil
}

// volumeMismatch explains why an existing volume does not satisfy spec, or
// returns "" when the request is an idempotent repeat.
func volumeMismatch(v *Volume, spec volumeSpec) string {
	switch {
	case spec.RequiredBytes > v.CapacityBytes:
		return fmt.Sprintf("capacity %d < required %d", v.CapacityBytes, spec.RequiredBytes)
	case spec.LimitBytes > 0 && v.CapacityBytes > spec.LimitBytes:
		return fmt.Sprintf("capacity %d > limit %d", v.CapacityBytes, spec.LimitBytes)
	case v.AccessType != spec.AccessType:
		return fmt.Sprintf("access type %s != %s", v.AccessType, spec.AccessType)
	case !maps.Equal(v.Parameters, spec.Parameters):
		return "parameters differ"
	case !maps.Equal(v.MutableParameters, spec.MutableParameters):
		return "mutable parameters differ"
	case !sameSource(v.Source, spec.Source):
		return "content source differs"
	}
	return ""
}

func sameSource(a, b *Source) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return *a == *b
}

func (s *store) deleteVolume(id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.volumes[id]
	if !ok {
		return nil // Already gone: DeleteVolume is idempotent.
	}
	if err := s.removeObject(filepath.Join(s.root, volumesDir), id); err != nil {
		return status.Errorf(codes.Internal, "deleting volume %s: %v", id, err)
	}
	delete(s.volumes, id)
	delete(s.volumeNames, v.Name)
	klog.InfoS("Deleted volume", "volumeID", id, "name", v.Name)
	return nil
}

// modifyVolume sets the given mutable parameters of a volume; keys not
// given keep their value (CSI spec, ControllerModifyVolume: "SPs MUST NOT
// modify volumes based on the absence of keys").
func (s *store) modifyVolume(id string, params map[string]string) (*Volume, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.volumes[id]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "volume %q not found", id)
	}
	changed := cloneVolume(v)
	if changed.MutableParameters == nil {
		changed.MutableParameters = map[string]string{}
	}
	maps.Copy(changed.MutableParameters, params)
	if err := s.writeMeta(filepath.Join(s.root, volumesDir, id+".json"), changed); err != nil {
		return nil, status.Errorf(codes.Internal, "writing volume metadata: %v", err)
	}
	s.volumes[id] = changed
	klog.InfoS("Modified volume", "volumeID", id, "name", v.Name, "mutableParameters", changed.MutableParameters)
	return cloneVolume(changed), nil
}

func (s *store) getVolume(id string) (*Volume, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.volumes[id]
	if !ok {
		return nil, false
	}
	return cloneVolume(v), true
}

func (s *store) listVolumes() []*Volume {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*Volume, 0, len(s.volumes))
	for _, v := range s.volumes {
		out = append(out, cloneVolume(v))
	}
	slices.SortFunc(out, func(a, b *Volume) int { return strings.Compare(a.ID, b.ID) })
	return out
}

func (s *store) createSnapshot(name, sourceVolumeID string, params map[string]string) (*Snapshot, error) {
	s.mu.Lock()
	defer s.mu.Unlock()

	if id, ok := s.snapshotNames[name]; ok {
		sn := s.snapshots[id]
		if sn.SourceVolumeID != sourceVolumeID || !maps.Equal(sn.Parameters, params) {
			return nil, status.Errorf(codes.AlreadyExists, "snapshot %q already exists for source volume %q with its own parameters", name, sn.SourceVolumeID)
		}
		return cloneSnapshot(sn), nil
	}
	src, ok := s.volumes[sourceVolumeID]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "source volume %q not found", sourceVolumeID)
	}
	sn := &Snapshot{
		ID:             newID(),
		Name:           name,
		SourceVolumeID: src.ID,
		SizeBytes:      src.CapacityBytes,
		Parameters:     maps.Clone(params),
		CreationTime:   time.Now().UTC(),
		ReadyToUse:     true, // The copy below completes before we answer.
	}
	if err := s.materialize(s.volumeDir(src.ID), s.snapshotDir(sn.ID)); err != nil {
		return nil, status.Errorf(codes.Internal, "copying volume %s: %v", src.ID, err)
	}
	if err := s.writeMeta(filepath.Join(s.root, snapshotsDir, sn.ID+".json"), sn); err != nil {
		_ = os.RemoveAll(s.snapshotDir(sn.ID))
		return nil, status.Errorf(codes.Internal, "writing snapshot metadata: %v", err)
	}
	s.snapshots[sn.ID] = sn
	s.snapshotNames[sn.Name] = sn.ID
	klog.InfoS("Created snapshot", "snapshotID", sn.ID, "name", sn.Name, "sourceVolumeID", src.ID)
	return cloneSnapshot(sn), nil
}

func (s *store) deleteSnapshot(id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	sn, ok := s.snapshots[id]
	if !ok {
		return nil
	}
	if err := s.removeObject(filepath.Join(s.root, snapshotsDir), id); err != nil {
		return status.Errorf(codes.Internal, "deleting snapshot %s: %v", id, err)
	}
	delete(s.snapshots, id)
	delete(s.snapshotNames, sn.Name)
	klog.InfoS("Deleted snapshot", "snapshotID", id, "name", sn.Name)
	return nil
}

// listSnapshots returns all snapshots ordered by ID, which gives pagination
// a stable order that survives deletions between pages.
func (s *store) listSnapshots() []*Snapshot {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*Snapshot, 0, len(s.snapshots))
	for _, sn := range s.snapshots {
		out = append(out, cloneSnapshot(sn))
	}
	slices.SortFunc(out, func(a, b *Snapshot) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// materialize creates dst as a copy of src (or empty when src is ""),
// building it under tmp/ first so that dst never exists half-populated.
func (s *store) materialize(src, dst string) error {
	staging := filepath.Join(s.root, tmpDir, newID())
	var err error
	if src == "" {
		err = os.Mkdir(staging, 0o755)
	} else {
		err = copyTree(src, staging)
	}
	if err == nil {
		err = os.Rename(staging, dst)
	}
	if err != nil {
		_ = os.RemoveAll(staging)
		return err
	}
	return nil
}

// writeMeta atomically replaces path with the JSON encoding of obj.
func (s *store) writeMeta(path string, obj any) error {
	data, err := json.MarshalIndent(obj, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding metadata: %w", err)
	}
	tmp := filepath.Join(s.root, tmpDir, newID()+".json")
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return fmt.Errorf("writing %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("renaming %s: %w", tmp, err)
	}
	return nil
}

// removeObject drops the commit record first, then the data.
func (s *store) removeObject(dir, id string) error {
	if err := os.Remove(filepath.Join(dir, id+".json")); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("removing metadata: %w", err)
	}
	if err := os.RemoveAll(filepath.Join(dir, id)); err != nil {
		return fmt.Errorf("removing data: %w", err)
	}
	return nil
}

func cloneVolume(v *Volume) *Volume {
	c := *v
	c.Parameters = maps.Clone(v.Parameters)
	c.MutableParameters = maps.Clone(v.MutableParameters)
	c.Topology = maps.Clone(v.Topology)
	if v.Source != nil {
		src := *v.Source
		c.Source = &src
	}
	return &c
}

func cloneSnapshot(sn *Snapshot) *Snapshot {
	c := *sn
	c.Parameters = maps.Clone(sn.Parameters)
	return &c
}
