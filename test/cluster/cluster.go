// Package cluster runs the local Kubernetes test bed of the provisioner:
// etcd, kube-apiserver and kube-controller-manager built from pinned Go
// modules, the snapshot CRDs and controllers, the test CSI driver and the
// csi-provisioner sidecar, all as loopback processes under _output/cluster.
// `make cluster-up` and the e2e TestMain use it the same way.
package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	apiextensionsclient "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// state is what _output/cluster/state.json records about a running bed, so
// `testbed status`, `testbed down` and a reusing TestMain find its parts.
type state struct {
	RepoRoot        string         `json:"repoRoot"`
	Ports           Ports          `json:"ports"`
	Socket          string         `json:"socket"`
	ToolsBinDir     string         `json:"toolsBinDir"`
	ToolsKey        string         `json:"toolsKey"`
	Modules         moduleVersions `json:"modules"`
	WithProvisioner bool           `json:"withProvisioner"`
	// ProvisionerArgs are the extra flags the sidecar runs with now.
	ProvisionerArgs []string `json:"provisionerArgs"`
	DriverArgs      []string `json:"driverArgs"`
	// ProvisionerRBAC is the RBAC the sidecar is bound to now (Options).
	ProvisionerRBAC string `json:"provisionerRBAC,omitempty"`
	// WithReplica is set while the second sidecar replica should run;
	// ReplicaArgs are its extra flags.
	WithReplica bool     `json:"withReplica,omitempty"`
	ReplicaArgs []string `json:"replicaArgs,omitempty"`
	// APIServerGateOff: kube-apiserver runs without CrossNamespaceGate, as
	// managed clusters do (SetAPIServerCrossNamespaceGate).
	APIServerGateOff bool `json:"apiServerGateOff,omitempty"`
	// Instances are the extra driver and sidecar pairs running (instances.go).
	Instances map[string]*Instance `json:"instances,omitempty"`
}

// Cluster is a running (or starting) test bed.
type Cluster struct {
	layout Layout
	state  state
	tools  *Tools
	// restConfig is the admin's (O=system:masters).
	restConfig    *rest.Config
	kube          kubernetes.Interface
	apiextensions apiextensionsclient.Interface
	// startedHere is set when this process brought the bed up, so a test
	// binary tears down only what it started.
	startedHere bool
}

// Kubeconfig is the admin kubeconfig of the bed (_output/cluster/kubeconfig).
func (c *Cluster) Kubeconfig() string { return c.layout.Kubeconfig() }

// RESTConfig returns a copy of the admin rest.Config.
func (c *Cluster) RESTConfig() *rest.Config { return rest.CopyConfig(c.restConfig) }

// DriverDataDir is the test driver's data dir: volumes/<id>/ and snapshots/<id>/.
func (c *Cluster) DriverDataDir() string { return c.layout.DriverDataDir() }

// DriverCallLogPath is the driver's JSON call log (one line per gRPC call).
func (c *Cluster) DriverCallLogPath() string { return c.layout.DriverCallLog() }

// DriverArrivalLogPath is the driver's arrival log (one JSON line per gRPC
// call when it arrives; csidriver.ParseArrivals reads it).
func (c *Cluster) DriverArrivalLogPath() string { return c.layout.DriverArrivalLog() }

// DriverSocket is the absolute path of the driver's unix socket.
func (c *Cluster) DriverSocket() string { return c.state.Socket }

// DriverControlURL is the base URL of the driver's control API (/delay, /fail, /reset).
func (c *Cluster) DriverControlURL() string {
	return fmt.Sprintf("http://127.0.0.1:%d", c.state.Ports.DriverControl)
}

// ProvisionerMetricsURL is the sidecar's metrics URL.
func (c *Cluster) ProvisionerMetricsURL() string {
	return fmt.Sprintf("http://127.0.0.1:%d/metrics", c.state.Ports.ProvisionerHTTP)
}

// LogPath is the log of a component (one of the component constants).
func (c *Cluster) LogPath(component string) string { return c.layout.LogPath(component) }

// LogDir holds the logs of all components.
func (c *Cluster) LogDir() string { return c.layout.LogDir() }

// KubectlPath is _output/bin/kubectl, a link to the cached kubectl.
func (c *Cluster) KubectlPath() string { return filepath.Join(c.layout.BinDir, "kubectl") }

// StartedHere reports whether this process brought the bed up.
func (c *Cluster) StartedHere() bool { return c.startedHere }

// Load attaches to the bed recorded under repoRoot/_output/cluster without
// checking that it runs; see Check.
func Load(repoRoot string) (*Cluster, error) {
	return loadFrom(newLayout(repoRoot))
}

// LoadFromKubeconfig attaches to the bed whose admin kubeconfig is at path;
// the bed's state must sit beside it (as _output/cluster/kubeconfig does).
func LoadFromKubeconfig(path string) (*Cluster, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	root := filepath.Dir(abs)
	if filepath.Base(abs) != "kubeconfig" {
		return nil, fmt.Errorf("%s is not a test bed kubeconfig (want <bed>/kubeconfig beside state.json)", path)
	}
	return loadFrom(Layout{Root: root, BinDir: filepath.Join(filepath.Dir(root), "bin")})
}

func loadFrom(l Layout) (*Cluster, error) {
	data, err := os.ReadFile(l.StatePath())
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("no test bed at %s: %w", l.Root, err)
	}
	if err != nil {
		return nil, fmt.Errorf("reading bed state: %w", err)
	}
	c := &Cluster{layout: l}
	if err := json.Unmarshal(data, &c.state); err != nil {
		return nil, fmt.Errorf("decoding %s: %w", l.StatePath(), err)
	}
	c.tools = &Tools{BinDir: c.state.ToolsBinDir, Key: c.state.ToolsKey, Modules: c.state.Modules}
	if err := c.connect(); err != nil {
		return nil, err
	}
	return c, nil
}

// connect builds the admin clients from the kubeconfig.
func (c *Cluster) connect() error {
	cfg, err := restConfigFromKubeconfig(c.layout.Kubeconfig())
	if err != nil {
		return err
	}
	c.restConfig = cfg
	if c.kube, err = kubernetes.NewForConfig(cfg); err != nil {
		return fmt.Errorf("building kube client: %w", err)
	}
	if c.apiextensions, err = apiextensionsclient.NewForConfig(cfg); err != nil {
		return fmt.Errorf("building apiextensions client: %w", err)
	}
	return nil
}

func (c *Cluster) saveState() error {
	data, err := json.MarshalIndent(c.state, "", "  ")
	if err != nil {
		return err
	}
	tmp := c.layout.StatePath() + ".tmp"
	if err := os.WriteFile(tmp, append(data, '\n'), 0o644); err != nil {
		return fmt.Errorf("writing bed state: %w", err)
	}
	return os.Rename(tmp, c.layout.StatePath())
}

// binPath is the binary a component runs from: the tool cache for the
// pinned tools, _output/bin for the driver and the sidecar (both replicas).
func (c *Cluster) binPath(component string) string {
	switch component {
	case TestDriver, Provisioner:
		return filepath.Join(c.layout.BinDir, component)
	case ProvisionerReplica:
		return filepath.Join(c.layout.BinDir, Provisioner)
	}
	// Instances (instances.go), also those of a bed whose state is gone.
	switch {
	case strings.HasPrefix(component, instanceSidecarPrefix):
		return filepath.Join(c.layout.BinDir, Provisioner)
	case strings.HasPrefix(component, instanceDriverPrefix):
		return filepath.Join(c.layout.BinDir, TestDriver)
	}
	return c.tools.Bin(component)
}

// optional reports whether the bed runs without component now: the sidecar
// after CLUSTER_PROVISIONER=none or StopProvisioner, the second replica
// unless it was started.
func (c *Cluster) optional(component string) bool {
	switch component {
	case Provisioner:
		return !c.state.WithProvisioner
	case ProvisionerReplica:
		return !c.state.WithReplica
	}
	return false
}

// ComponentStatus is one line of `testbed status`.
type ComponentStatus struct {
	Name   string
	PID    int
	Alive  bool
	RSSKiB int64
	Log    string
}

// Status reports PID, liveness and resident memory (VmRSS) of every
// component with a PID file.
func (c *Cluster) Status() []ComponentStatus {
	var out []ComponentStatus
	for _, comp := range append(slices.Clone(startOrder), c.instanceComponents()...) {
		pid, _ := readPID(c.layout.PIDPath(comp))
		if pid == 0 && c.optional(comp) {
			continue
		}
		st := ComponentStatus{Name: comp, PID: pid, Log: c.layout.LogPath(comp)}
		st.Alive = processAlive(pid, filepath.Base(c.binPath(comp)))
		if st.Alive {
			st.RSSKiB, _ = rssKiB(pid)
		}
		out = append(out, st)
	}
	return out
}

// Check returns nil when every expected component runs and kube-apiserver
// is ready; that is what makes a second cluster-up report the running bed.
func (c *Cluster) Check(ctx context.Context) error {
	for _, st := range c.Status() {
		if !st.Alive && !c.optional(st.Name) {
			return fmt.Errorf("%s is not running (see %s)", st.Name, st.Log)
		}
	}
	if ok, detail := apiServerReady(c.kube)(ctx); !ok {
		return fmt.Errorf("kube-apiserver is not ready: %s", detail)
	}
	return nil
}

// anyAlive reports whether some component recorded under the bed still runs.
func (c *Cluster) anyAlive() bool {
	for _, st := range c.Status() {
		if st.Alive {
			return true
		}
	}
	return false
}
