package cluster

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Component names. They name the log files (_output/cluster/logs/<name>.log),
// the PID files (_output/cluster/pids/<name>.pid) and the binaries.
const (
	Etcd                  = "etcd"
	KubeAPIServer         = "kube-apiserver"
	KubeControllerManager = "kube-controller-manager"
	SnapshotController    = "snapshot-controller"
	CSISnapshotter        = "csi-snapshotter"
	TestDriver            = "csi-test-driver"
	Provisioner           = "csi-provisioner"
	// ProvisionerReplica is a second sidecar process (same binary, its own
	// metrics port), started only on request (StartProvisionerReplica), to
	// run two replicas with leader election as a Deployment would.
	ProvisionerReplica = "csi-provisioner-2"
)

// startOrder is the order components come up in; they stop in reverse, so
// kube-apiserver always goes before etcd (the other way round it hangs).
var startOrder = []string{
	Etcd, KubeAPIServer, KubeControllerManager, SnapshotController,
	TestDriver, CSISnapshotter, Provisioner, ProvisionerReplica,
}

const (
	// DriverName is the CSI driver name the test driver registers.
	DriverName = "file.csi.crossns.io"
	// StorageClassName is the StorageClass the bed creates for the test driver.
	StorageClassName = "csi-test-sc"
	// SnapshotClassName is the VolumeSnapshotClass the bed creates for the test driver.
	SnapshotClassName = "csi-test-snapclass"
	// DriverNodeID is the node ID the test driver reports.
	DriverNodeID = "testbed-node"
	// CrossNamespaceGate is the feature gate every component of the bed runs with.
	CrossNamespaceGate = "CrossNamespaceVolumeDataSource=true"
	// SharingGate is the sidecar's live-sharing gate, on in the bed's
	// sidecars only (the Kubernetes components do not know it).
	SharingGate = "CrossNamespaceVolumeSharing=true"
)

// Ports are the loopback ports of the bed. Defaults stay away from the
// well-known ports (2379, 6443, 10257) so a real cluster on the machine is
// not disturbed; each is overridable by the env var named in envPorts.
type Ports struct {
	Etcd            int `json:"etcd"`
	EtcdPeer        int `json:"etcdPeer"`
	APIServer       int `json:"apiServer"`
	ControllerMgr   int `json:"controllerManager"`
	ProvisionerHTTP int `json:"provisionerHTTP"`
	DriverControl   int `json:"driverControl"`
	// ProvisionerReplicaHTTP is the metrics port of the second sidecar
	// replica; 0 in the state of a bed started before it existed.
	ProvisionerReplicaHTTP int `json:"provisionerReplicaHTTP,omitempty"`
}

// envPorts documents the env vars that override the default ports.
var envPorts = []struct {
	env  string
	def  int
	port func(*Ports) *int
}{
	{"CLUSTER_ETCD_PORT", 23790, func(p *Ports) *int { return &p.Etcd }},
	{"CLUSTER_ETCD_PEER_PORT", 23800, func(p *Ports) *int { return &p.EtcdPeer }},
	{"CLUSTER_APISERVER_PORT", 16443, func(p *Ports) *int { return &p.APIServer }},
	{"CLUSTER_KCM_PORT", 20257, func(p *Ports) *int { return &p.ControllerMgr }},
	{"CLUSTER_PROVISIONER_HTTP_PORT", 28080, func(p *Ports) *int { return &p.ProvisionerHTTP }},
	{"CLUSTER_DRIVER_CONTROL_PORT", 28090, func(p *Ports) *int { return &p.DriverControl }},
	{"CLUSTER_PROVISIONER_REPLICA_HTTP_PORT", defaultReplicaHTTPPort, func(p *Ports) *int { return &p.ProvisionerReplicaHTTP }},
}

// defaultReplicaHTTPPort is the second replica's metrics port, also for a
// bed whose state predates the replica.
const defaultReplicaHTTPPort = 28081

// Options say how to bring a bed up. OptionsFromEnv fills them the way
// `make cluster-up` and the e2e TestMain do.
type Options struct {
	// RepoRoot is the root of the main module; state goes to RepoRoot/_output.
	RepoRoot string
	// Ports are the loopback ports of the components.
	Ports Ports
	// WithProvisioner starts the sidecar; CLUSTER_PROVISIONER=none clears it.
	WithProvisioner bool
	// ProvisionerArgs are extra sidecar flags (CLUSTER_PROVISIONER_ARGS).
	ProvisionerArgs []string
	// DriverArgs are extra test driver flags (CLUSTER_DRIVER_ARGS), e.g. --topology.
	DriverArgs []string
	// ProvisionerRBAC names the RBAC the sidecar runs with
	// (CLUSTER_PROVISIONER_RBAC): "" or "deploy" for deploy/kubernetes,
	// "upstream" for upstream external-provisioner v6.3.0's rules.
	ProvisionerRBAC string
	// ToolCacheDir is the root of the tool cache (CLUSTER_TOOLS_CACHE).
	ToolCacheDir string
}

// OptionsFromEnv returns Options for the repository containing the working
// directory, with ports and switches taken from the environment.
func OptionsFromEnv() (Options, error) {
	root, err := FindRepoRoot()
	if err != nil {
		return Options{}, err
	}
	o := Options{RepoRoot: root, WithProvisioner: true}
	for _, e := range envPorts {
		*e.port(&o.Ports) = e.def
		v := os.Getenv(e.env)
		if v == "" {
			continue
		}
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 || n > 65535 {
			return Options{}, fmt.Errorf("%s=%q is not a port number", e.env, v)
		}
		*e.port(&o.Ports) = n
	}
	if v := os.Getenv("CLUSTER_PROVISIONER"); v == "none" {
		o.WithProvisioner = false
	}
	o.ProvisionerArgs = strings.Fields(os.Getenv("CLUSTER_PROVISIONER_ARGS"))
	o.DriverArgs = strings.Fields(os.Getenv("CLUSTER_DRIVER_ARGS"))
	o.ProvisionerRBAC = os.Getenv("CLUSTER_PROVISIONER_RBAC")
	if _, err := RBACManifestFor(o.ProvisionerRBAC); err != nil {
		return Options{}, err
	}
	if o.ToolCacheDir, err = toolCacheRoot(); err != nil {
		return Options{}, err
	}
	return o, nil
}

// toolCacheRoot is CLUSTER_TOOLS_CACHE, else ${XDG_CACHE_HOME:-$HOME/.cache}/csi-provisioner-testbed.
func toolCacheRoot() (string, error) {
	if v := os.Getenv("CLUSTER_TOOLS_CACHE"); v != "" {
		return filepath.Abs(v)
	}
	base := os.Getenv("XDG_CACHE_HOME")
	if base == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", fmt.Errorf("locating the tool cache: %w", err)
		}
		base = filepath.Join(home, ".cache")
	}
	return filepath.Join(base, "csi-provisioner-testbed"), nil
}

// mainModule is the module path FindRepoRoot looks for.
const mainModule = "github.com/crossns/external-provisioner"

// FindRepoRoot walks up from the working directory to the go.mod of the main
// module, so the bed finds its places from `make` (repo root) and from
// `go test` (the package directory) alike.
func FindRepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("finding the repository root: %w", err)
	}
	for {
		data, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && strings.HasPrefix(strings.TrimSpace(string(data)), "module "+mainModule+"\n") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod of module %s above the working directory", mainModule)
		}
		dir = parent
	}
}

// Layout holds the fixed places of a bed under RepoRoot/_output.
type Layout struct {
	// Root is _output/cluster: everything `make cluster-down` removes.
	Root string
	// BinDir is _output/bin: the sidecar, the driver, testbed and a kubectl link.
	BinDir string
}

func newLayout(repoRoot string) Layout {
	out := filepath.Join(repoRoot, "_output")
	return Layout{Root: filepath.Join(out, "cluster"), BinDir: filepath.Join(out, "bin")}
}

// Kubeconfig is the admin kubeconfig (_output/cluster/kubeconfig).
func (l Layout) Kubeconfig() string { return filepath.Join(l.Root, "kubeconfig") }

// ControllerManagerKubeconfig is the kube-controller-manager's own kubeconfig.
func (l Layout) ControllerManagerKubeconfig() string {
	return filepath.Join(l.Root, "kube-controller-manager.kubeconfig")
}

// PKIDir holds the CA, the serving and client certificates and the SA key.
func (l Layout) ProvisionerKubeconfig() string {
	return filepath.Join(l.Root, "csi-provisioner.kubeconfig")
}

// PKIDir holds the bed's certificates and keys.
func (l Layout) PKIDir() string { return filepath.Join(l.Root, "pki") }

// LogDir holds one log per component.
func (l Layout) LogDir() string { return filepath.Join(l.Root, "logs") }

// LogPath is _output/cluster/logs/<component>.log.
func (l Layout) LogPath(component string) string {
	return filepath.Join(l.LogDir(), component+".log")
}

// DriverCallLog is the test driver's JSON call log, one line per gRPC call.
func (l Layout) DriverCallLog() string { return filepath.Join(l.LogDir(), "csi-test-driver-calls.log") }

// DriverArrivalLog is the test driver's arrival log: one JSON line per gRPC
// call when it arrives (the call log is written when it ends).
func (l Layout) DriverArrivalLog() string {
	return filepath.Join(l.LogDir(), "csi-test-driver-arrivals.log")
}

// PIDDir holds one PID file per running component.
func (l Layout) PIDDir() string { return filepath.Join(l.Root, "pids") }

// PIDPath is _output/cluster/pids/<component>.pid.
func (l Layout) PIDPath(component string) string {
	return filepath.Join(l.PIDDir(), component+".pid")
}

// EtcdDataDir is etcd's data directory.
func (l Layout) EtcdDataDir() string { return filepath.Join(l.Root, "etcd") }

// DriverDataDir is the test driver's data dir (volumes/ and snapshots/).
func (l Layout) DriverDataDir() string { return filepath.Join(l.Root, "csi-data") }

// StatePath is the JSON record of how the running bed was started.
func (l Layout) StatePath() string { return filepath.Join(l.Root, "state.json") }

// defaultSocketPath is where the driver socket goes unless the path is too
// long for a unix socket (108 bytes on Linux), see socketPath.
func (l Layout) defaultSocketPath() string { return filepath.Join(l.Root, "csi.sock") }
