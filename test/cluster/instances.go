package cluster

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/klog/v2"

	"github.com/crossns/external-provisioner/test/csidriver"
)

// An Instance is a test driver with a csi-provisioner of its own, beside the
// bed's driver and sidecar: one per node to run the sidecar in node mode
// (--node-deployment, each driver with its own socket, node ID and
// topology), or the test driver serving under a migrated driver's name
// (pd.csi.storage.gke.io) for CSI migration. Its components are named
// csi-test-driver-<name> and csi-provisioner-<name> (logs and PID files as
// any component's; KillComponent and StartComponent take them); its data,
// call log and socket live under _output/cluster/instances/<name>/. The
// sidecar authenticates as the bed's sidecar does (deploy/kubernetes RBAC).
type Instance struct {
	// Name names the components and the places of the instance.
	Name string `json:"name"`
	// DriverName is the CSI driver name the test driver reports.
	DriverName string `json:"driverName"`
	// NodeID is what the driver's NodeGetInfo reports; Topology
	// ("key=value,...") too, and the driver then creates volumes only there.
	NodeID   string `json:"nodeID,omitempty"`
	Topology string `json:"topology,omitempty"`
	// Node, when set, is the name of a Node the bed creates for the
	// instance (labelled with Topology) with a CSINode listing the driver
	// with NodeID and the topology keys, as kubelet would register them; it
	// also becomes the sidecar's NODE_NAME. StopInstance deletes both.
	Node string `json:"node,omitempty"`
	// DriverArgs are extra test driver flags, e.g. --volume-id-prefix.
	DriverArgs []string `json:"driverArgs,omitempty"`
	// SidecarArgs are extra sidecar flags, after the bed's base flags.
	SidecarArgs []string `json:"sidecarArgs,omitempty"`
	// SidecarEnv are extra environment variables of the sidecar ("K=V").
	SidecarEnv []string `json:"sidecarEnv,omitempty"`

	// Socket and HTTPPort are given when the instance starts.
	Socket   string `json:"socket,omitempty"`
	HTTPPort int    `json:"httpPort,omitempty"`
}

// instancePrefixes name the components of an instance.
const (
	instanceDriverPrefix  = TestDriver + "-"
	instanceSidecarPrefix = Provisioner + "-"
)

// InstanceDriver and InstanceSidecar are the component names of an
// instance's driver and sidecar.
func InstanceDriver(name string) string  { return instanceDriverPrefix + name }
func InstanceSidecar(name string) string { return instanceSidecarPrefix + name }

// InstanceDir holds an instance's data dir and call log.
func (c *Cluster) InstanceDir(name string) string {
	return filepath.Join(c.layout.Root, "instances", name)
}

// InstanceDataDir is the instance driver's data dir (volumes/<id>/).
func (c *Cluster) InstanceDataDir(name string) string {
	return filepath.Join(c.InstanceDir(name), "csi-data")
}

// InstanceCallLogPath is the instance driver's JSON call log.
func (c *Cluster) InstanceCallLogPath(name string) string {
	return filepath.Join(c.InstanceDir(name), "calls.log")
}

// InstanceMetricsURL is the instance sidecar's metrics URL ("" when the
// instance does not run).
func (c *Cluster) InstanceMetricsURL(name string) string {
	inst, ok := c.state.Instances[name]
	if !ok {
		return ""
	}
	return fmt.Sprintf("http://127.0.0.1:%d/metrics", inst.HTTPPort)
}

// Instances returns the names of the instances the bed runs, sorted.
func (c *Cluster) Instances() []string {
	var out []string
	for name := range c.state.Instances {
		out = append(out, name)
	}
	sort.Strings(out)
	return out
}

func validInstanceName(name string) error {
	if name == "" || strings.ContainsAny(name, "/ ") {
		return fmt.Errorf("instance name %q: want a non-empty name without / or spaces", name)
	}
	for _, comp := range startOrder {
		if comp == InstanceDriver(name) || comp == InstanceSidecar(name) {
			return fmt.Errorf("instance name %q: its components would be named like the bed's %s", name, comp)
		}
	}
	return nil
}

// StartInstance starts (or starts again, stopping the one running first)
// the instance's driver and sidecar and returns once the driver answers on
// its socket and the sidecar serves its metrics.
func (c *Cluster) StartInstance(ctx context.Context, inst Instance) error {
	if err := validInstanceName(inst.Name); err != nil {
		return err
	}
	if inst.DriverName == "" {
		return fmt.Errorf("instance %s: no driver name", inst.Name)
	}
	if err := c.StopInstance(ctx, inst.Name); err != nil {
		return err
	}
	for _, dir := range []string{c.InstanceDataDir(inst.Name), c.layout.LogDir(), c.layout.PIDDir()} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
	}
	inst.Socket = instanceSocketPath(c.layout, inst.Name)
	if err := os.MkdirAll(filepath.Dir(inst.Socket), 0o755); err != nil {
		return err
	}
	_ = os.Remove(inst.Socket)
	port, err := freePort()
	if err != nil {
		return fmt.Errorf("instance %s: %w", inst.Name, err)
	}
	inst.HTTPPort = port
	if inst.Node != "" {
		if err := c.registerNode(ctx, inst); err != nil {
			return err
		}
	}
	if c.state.Instances == nil {
		c.state.Instances = map[string]*Instance{}
	}
	c.state.Instances[inst.Name] = &inst
	if err := c.saveState(); err != nil {
		return err
	}
	klog.FromContext(ctx).Info("Starting instance", "instance", inst.Name, "driver", inst.DriverName, "node", inst.Node)
	for _, comp := range []string{InstanceDriver(inst.Name), InstanceSidecar(inst.Name)} {
		if err := c.startInstanceComponent(ctx, comp); err != nil {
			return fmt.Errorf("instance %s: %w", inst.Name, err)
		}
	}
	return nil
}

// StopInstance stops an instance's sidecar and driver, deletes the Node and
// CSINode made for it and forgets it; its data and logs stay. An instance
// that does not run is no error.
func (c *Cluster) StopInstance(ctx context.Context, name string) error {
	inst := c.state.Instances[name]
	var errs []error
	for _, comp := range []string{InstanceSidecar(name), InstanceDriver(name)} {
		if err := c.stopComponent(ctx, comp); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if inst == nil {
		return errors.Join(errs...)
	}
	if inst.Node != "" {
		if err := c.unregisterNode(ctx, inst.Node); err != nil {
			errs = append(errs, err)
		}
	}
	delete(c.state.Instances, name)
	if err := c.saveState(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// instanceOf returns the instance a component belongs to and whether it is
// the instance's sidecar (else its driver).
func (c *Cluster) instanceOf(component string) (inst *Instance, sidecar bool) {
	for name, i := range c.state.Instances {
		switch component {
		case InstanceDriver(name):
			return i, false
		case InstanceSidecar(name):
			return i, true
		}
	}
	return nil, false
}

// instanceComponents are the components of the running instances, each
// instance's driver before its sidecar, instances by name.
func (c *Cluster) instanceComponents() []string {
	var out []string
	for _, name := range c.Instances() {
		out = append(out, InstanceDriver(name), InstanceSidecar(name))
	}
	return out
}

// startInstanceComponent starts an instance's driver or sidecar with its
// flags and environment and waits until it is ready.
func (c *Cluster) startInstanceComponent(ctx context.Context, component string) error {
	inst, sidecar := c.instanceOf(component)
	if inst == nil {
		return fmt.Errorf("unknown component %q", component)
	}
	var env []string
	if sidecar {
		env = c.instanceSidecarEnv(inst)
	}
	ch, err := startDetachedEnv(ctx, component, c.binPath(component), c.instanceArgs(inst, sidecar), env,
		c.layout.LogPath(component), c.layout.PIDPath(component))
	if err != nil {
		return err
	}
	return c.waitReady(ctx, component, ch, c.instanceReadiness(inst, sidecar))
}

func (c *Cluster) instanceArgs(inst *Instance, sidecar bool) []string {
	if sidecar {
		return c.sidecarArgsOn(inst.Socket, inst.HTTPPort, inst.SidecarArgs)
	}
	args := []string{
		"--endpoint=unix://" + inst.Socket,
		"--data-dir=" + c.InstanceDataDir(inst.Name),
		"--drivername=" + inst.DriverName,
		"--log-file=" + c.InstanceCallLogPath(inst.Name),
	}
	if inst.NodeID != "" {
		args = append(args, "--nodeid="+inst.NodeID)
	}
	if inst.Topology != "" {
		args = append(args, "--topology="+inst.Topology)
	}
	return append(args, inst.DriverArgs...)
}

// instanceSidecarEnv is what the downward API gives a sidecar in a pod:
// NODE_NAME (node mode) and the namespace; then the instance's own.
func (c *Cluster) instanceSidecarEnv(inst *Instance) []string {
	env := []string{"NAMESPACE=default", "POD_NAMESPACE=default"}
	if inst.Node != "" {
		env = append(env, "NODE_NAME="+inst.Node)
	}
	return append(env, inst.SidecarEnv...)
}

func (c *Cluster) instanceReadiness(inst *Instance, sidecar bool) probe {
	if sidecar {
		return httpOK(fmt.Sprintf("http://127.0.0.1:%d/metrics", inst.HTTPPort))
	}
	return csiProbe(inst.Socket, inst.DriverName)
}

// registerNode creates the instance's Node, labelled with its topology, and
// puts the driver into the node's CSINode, as kubelet and the driver's
// node-driver-registrar would.
func (c *Cluster) registerNode(ctx context.Context, inst Instance) error {
	segments, err := csidriver.ParseTopology(inst.Topology)
	if err != nil {
		return fmt.Errorf("instance %s: %w", inst.Name, err)
	}
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: inst.Node, Labels: map[string]string{corev1.LabelHostname: inst.Node}}}
	var keys []string
	for k, v := range segments {
		node.Labels[k] = v
		keys = append(keys, k)
	}
	sort.Strings(keys)
	if _, err := c.kube.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating Node %s: %w", inst.Node, err)
	}
	driver := storagev1.CSINodeDriver{Name: inst.DriverName, NodeID: inst.NodeID, TopologyKeys: keys}
	csiNode, err := c.kube.StorageV1().CSINodes().Get(ctx, inst.Node, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		csiNode = &storagev1.CSINode{ObjectMeta: metav1.ObjectMeta{Name: inst.Node}, Spec: storagev1.CSINodeSpec{Drivers: []storagev1.CSINodeDriver{driver}}}
		_, err = c.kube.StorageV1().CSINodes().Create(ctx, csiNode, metav1.CreateOptions{})
	} else if err == nil {
		csiNode.Spec.Drivers = slices.DeleteFunc(csiNode.Spec.Drivers, func(d storagev1.CSINodeDriver) bool { return d.Name == inst.DriverName })
		csiNode.Spec.Drivers = append(csiNode.Spec.Drivers, driver)
		_, err = c.kube.StorageV1().CSINodes().Update(ctx, csiNode, metav1.UpdateOptions{})
	}
	if err != nil {
		return fmt.Errorf("registering driver %s in CSINode %s: %w", inst.DriverName, inst.Node, err)
	}
	return nil
}

// unregisterNode deletes a Node and its CSINode.
func (c *Cluster) unregisterNode(ctx context.Context, node string) error {
	if err := c.kube.StorageV1().CSINodes().Delete(ctx, node, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("deleting CSINode %s: %w", node, err)
	}
	if err := c.kube.CoreV1().Nodes().Delete(ctx, node, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("deleting Node %s: %w", node, err)
	}
	return nil
}

// instanceSocketPath is instances/<name>/csi.sock under the bed, or a short
// path under the temp dir when that is too long for a unix socket.
func instanceSocketPath(l Layout, name string) string {
	p := filepath.Join(l.Root, "instances", name, "csi.sock")
	if len(p) <= maxSocketPath {
		return p
	}
	sum := sha256.Sum256([]byte(l.Root))
	return filepath.Join(os.TempDir(), "csi-testbed-"+hex.EncodeToString(sum[:])[:12], "instance-"+name+".sock")
}

// freePort asks the kernel for a free loopback port.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("finding a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
