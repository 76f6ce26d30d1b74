// Package csidriver is a file-backed CSI driver for tests of the provisioner.
//
// Volumes and snapshots are directories below a data directory, described by
// JSON files next to them, so the driver survives restarts. Every gRPC call
// is written as one JSON line to a call log (see CallRecord), and tests can
// delay calls or make them fail, either through the Go API (SetDelay,
// FailNext, Reset) or through a loopback HTTP control endpoint.
//
// The driver implements the Identity and Controller services. Its Node
// service answers only what generic CSI tooling needs to clean up; there is
// no kubelet that would publish volumes.
package csidriver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"k8s.io/klog/v2"
)

const (
	// DefaultDriverName is the CSI driver name reported by GetPluginInfo.
	DefaultDriverName = "file.csi.crossns.io"
	// DefaultCapacity is the default of Config.Capacity.
	DefaultCapacity = "100Gi"

	// gracefulStopTimeout bounds how long shutdown waits for calls in
	// flight, which may be sleeping in an injected delay.
	gracefulStopTimeout = 5 * time.Second
)

// Config configures a Driver. Only DataDir is required.
type Config struct {
	// DriverName defaults to DefaultDriverName.
	DriverName string
	// VendorVersion is reported by GetPluginInfo; defaults to "test".
	VendorVersion string
	// NodeID is reported by NodeGetInfo; defaults to the host name.
	NodeID string
	// DataDir holds volumes/, snapshots/ and their JSON metadata.
	DataDir string
	// Topology is the single topology segment all volumes are accessible
	// from. Empty disables the VOLUME_ACCESSIBILITY_CONSTRAINTS capability.
	Topology map[string]string
	// Capacity is the total size reported by GetCapacity before subtracting
	// volumes, as a resource quantity ("100Gi"); empty means DefaultCapacity.
	Capacity string
	// CallLog receives one JSON line per gRPC call; nil discards them.
	CallLog io.Writer
	// ArrivalLog receives one JSON line (ArrivalRecord) per gRPC call when
	// it arrives, before any knob or handler runs; nil discards them. The
	// call log is written when a call ends, so a call that outlives a
	// reader's look, or that dies with the driver, shows only here.
	ArrivalLog io.Writer
	// Delays are initial per-method delays ("*" for all methods).
	Delays map[string]time.Duration
	// Endpoint is the gRPC endpoint used by Run: "unix:///abs/path.sock",
	// "unix:/path", a plain absolute path, or "tcp://host:port".
	Endpoint string
	// ControlEndpoint is the loopback "host:port" of the HTTP control API
	// served by Run; empty disables it.
	ControlEndpoint string
	// VolumeIDPrefix goes before every volume ID the driver hands out, and
	// volume IDs it is given must carry it. A driver serving under a
	// migrated driver's name needs IDs csi-translation-lib can translate:
	// "projects/UNSPECIFIED/zones/UNSPECIFIED/disks/" for pd.csi.storage.gke.io.
	VolumeIDPrefix string
}

// Driver is a running or runnable instance of the test CSI driver.
type Driver struct {
	cfg    Config
	store  *store
	knobs  *knobs
	logger *callLogger
}

// New validates cfg and opens (or initialises) the data directory.
func New(cfg Config) (*Driver, error) {
	if cfg.DataDir == "" {
		return nil, errors.New("csidriver: DataDir is required")
	}
	if cfg.DriverName == "" {
		cfg.DriverName = DefaultDriverName
	}
	if cfg.VendorVersion == "" {
		cfg.VendorVersion = "test"
	}
	if cfg.NodeID == "" {
		host, err := os.Hostname()
		if err != nil {
			return nil, fmt.Errorf("csidriver: determining default node ID: %w", err)
		}
		cfg.NodeID = host
	}
	if cfg.Capacity == "" {
		cfg.Capacity = DefaultCapacity
	}
	capacity, err := ParseCapacity(cfg.Capacity)
	if err != nil {
		return nil, fmt.Errorf("csidriver: %w", err)
	}
	if cfg.CallLog == nil {
		cfg.CallLog = io.Discard
	}
	if cfg.ArrivalLog == nil {
		cfg.ArrivalLog = io.Discard
	}
	cfg.Topology = maps.Clone(cfg.Topology)

	k := newKnobs()
	if err := k.setDelays(cfg.Delays); err != nil {
		return nil, fmt.Errorf("csidriver: %w", err)
	}
	st, err := openStore(cfg.DataDir, capacity)
	if err != nil {
		return nil, fmt.Errorf("csidriver: opening data directory %s: %w", cfg.DataDir, err)
	}
	return &Driver{cfg: cfg, store: st, knobs: k, logger: &callLogger{out: cfg.CallLog, arrivals: cfg.ArrivalLog}}, nil
}

// Name returns the CSI driver name.
func (d *Driver) Name() string { return d.cfg.DriverName }

// Volumes returns the metadata of all volumes, ordered by ID.
func (d *Driver) Volumes() []Volume {
	var out []Volume
	for _, v := range d.store.listVolumes() {
		out = append(out, *v)
	}
	return out
}

// Snapshots returns the metadata of all snapshots, ordered by ID.
func (d *Driver) Snapshots() []Snapshot {
	var out []Snapshot
	for _, sn := range d.store.listSnapshots() {
		out = append(out, *sn)
	}
	return out
}

// VolumePath returns the data directory of a volume ID (existing or not).
func (d *Driver) VolumePath(volumeID string) string {
	return d.store.volumeDir(d.storeVolumeID(volumeID))
}

// SnapshotPath returns the data directory of a snapshot ID.
func (d *Driver) SnapshotPath(snapshotID string) string { return d.store.snapshotDir(snapshotID) }

// NewServer returns a gRPC server with the CSI services and interceptors
// registered, for callers that manage serving themselves.
func (d *Driver) NewServer() *grpc.Server {
	srv := grpc.NewServer(grpc.ChainUnaryInterceptor(d.logger.intercept, d.knobs.intercept))
	csi.RegisterIdentityServer(srv, &identityServer{d: d})
	csi.RegisterControllerServer(srv, &controllerServer{d: d})
	csi.RegisterNodeServer(srv, &nodeServer{d: d})
	return srv
}

// Serve serves the CSI services on lis until ctx is cancelled, then stops
// gracefully. It returns nil after a cancellation-triggered stop.
func (d *Driver) Serve(ctx context.Context, lis net.Listener) error {
	srv := d.NewServer()
	errCh := make(chan error, 1)
	go func() { errCh <- srv.Serve(lis) }()
	klog.InfoS("Serving CSI", "driver", d.cfg.DriverName, "address", lis.Addr().String())

	select {
	case err := <-errCh:
		return fmt.Errorf("serving gRPC on %s: %w", lis.Addr(), err)
	case <-ctx.Done():
	}
	stopped := make(chan struct{})
	go func() {
		srv.GracefulStop()
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-time.After(gracefulStopTimeout):
		srv.Stop()
		<-stopped
	}
	<-errCh
	klog.InfoS("Stopped serving CSI", "address", lis.Addr().String())
	return nil
}

// Run listens on cfg.Endpoint (and cfg.ControlEndpoint, if set) and serves
// until ctx is cancelled or one of the servers fails. Both listeners are
// open before anything is served, so a client that reached one can rely on
// the other.
func (d *Driver) Run(ctx context.Context) error {
	lis, err := Listen(d.cfg.Endpoint)
	if err != nil {
		return err
	}
	var clis net.Listener
	if d.cfg.ControlEndpoint != "" {
		if clis, err = ListenControl(d.cfg.ControlEndpoint); err != nil {
			lis.Close()
			return err
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	errs := make(chan error, 2)
	running := 1
	go func() { errs <- d.Serve(ctx, lis) }()
	if clis != nil {
		running++
		go func() { errs <- d.ServeControl(ctx, clis) }()
	}

	// The first server to return ends the run; the other is then stopped.
	var first error
	for range running {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
		cancel()
	}
	return first
}

// Listen opens the listener for a CSI endpoint. A stale unix socket left by
// a previous run is removed; any other existing file is an error.
func Listen(endpoint string) (net.Listener, error) {
	network, addr, err := parseEndpoint(endpoint)
	if err != nil {
		return nil, err
	}
	if network == "unix" {
		if err := removeStaleSocket(addr); err != nil {
			return nil, err
		}
		if err := os.MkdirAll(filepath.Dir(addr), 0o755); err != nil {
			return nil, fmt.Errorf("creating socket directory: %w", err)
		}
	}
	lis, err := net.Listen(network, addr)
	if err != nil {
		return nil, fmt.Errorf("listening on %s: %w", endpoint, err)
	}
	return lis, nil
}

func parseEndpoint(endpoint string) (network, addr string, err error) {
	switch {
	case endpoint == "":
		return "", "", errors.New("empty endpoint")
	case strings.HasPrefix(endpoint, "unix://"):
		addr = strings.TrimPrefix(endpoint, "unix://")
		network = "unix"
	case strings.HasPrefix(endpoint, "unix:"):
		addr = strings.TrimPrefix(endpoint, "unix:")
		network = "unix"
	case strings.HasPrefix(endpoint, "tcp://"):
		return "tcp", strings.TrimPrefix(endpoint, "tcp://"), nil
	case strings.HasPrefix(endpoint, "/"):
		addr, network = endpoint, "unix"
	default:
		return "", "", fmt.Errorf("unsupported endpoint %q: want unix:///path or tcp://host:port", endpoint)
	}
	if addr == "" {
		return "", "", fmt.Errorf("endpoint %q has no socket path", endpoint)
	}
	return network, addr, nil
}

func removeStaleSocket(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("checking socket %s: %w", path, err)
	}
	if fi.Mode()&fs.ModeSocket == 0 {
		return fmt.Errorf("refusing to replace %s: not a socket", path)
	}
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("removing stale socket %s: %w", path, err)
	}
	klog.InfoS("Removed stale socket", "path", path)
	return nil
}

// volumeID is the volume ID the driver hands out for a volume of its store:
// the store's ID after Config.VolumeIDPrefix.
func (d *Driver) volumeID(id string) string {
	if id == "" {
		return ""
	}
	return d.cfg.VolumeIDPrefix + id
}

// storeVolumeID is the store's ID of a volume ID the driver was given. One
// without the prefix names no volume of the store.
func (d *Driver) storeVolumeID(volumeID string) string {
	id, ok := strings.CutPrefix(volumeID, d.cfg.VolumeIDPrefix)
	if !ok {
		return "not-a-volume-of-this-driver:" + volumeID
	}
	return id
}
