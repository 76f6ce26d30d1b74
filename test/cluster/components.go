package cluster

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
)

// kcmControllers are the kube-controller-manager controllers the bed runs:
// the volume ones a provisioner interacts with, and the namespace, service
// account and garbage collector controllers that let tests delete their
// namespaces. Pod, node and workload controllers are left out: the bed runs
// no kubelet. kube-apiserver's StorageObjectInUseProtection admission puts
// kubernetes.io/vac-protection on every VolumeAttributesClass; without its
// controller a deleted class would never go.
var kcmControllers = []string{
	"persistentvolume-binder-controller",
	"persistentvolume-expander-controller",
	"persistentvolume-protection-controller",
	"persistentvolumeclaim-protection-controller",
	"volumeattributesclass-protection-controller",
	"namespace-controller",
	"serviceaccount-controller",
	"garbage-collector-controller",
}

// Log lines that mark the snapshot components as running; they run without
// leader election, so there is no lease to watch.
const (
	snapshotControllerStarted = "Starting snapshot controller"
	csiSnapshotterStarted     = "Starting CSI snapshotter"
)

func (c *Cluster) etcdURL() string { return fmt.Sprintf("http://127.0.0.1:%d", c.state.Ports.Etcd) }

func (c *Cluster) apiServerURL() string {
	return fmt.Sprintf("https://127.0.0.1:%d", c.state.Ports.APIServer)
}

func (c *Cluster) pki(name string) string { return filepath.Join(c.layout.PKIDir(), name) }

func (c *Cluster) etcdArgs() []string {
	peer := fmt.Sprintf("http://127.0.0.1:%d", c.state.Ports.EtcdPeer)
	return []string{
		"--name=testbed",
		"--data-dir=" + c.layout.EtcdDataDir(),
		"--listen-client-urls=" + c.etcdURL(),
		"--advertise-client-urls=" + c.etcdURL(),
		"--listen-peer-urls=" + peer,
		"--initial-advertise-peer-urls=" + peer,
		"--initial-cluster=testbed=" + peer,
		"--initial-cluster-state=new",
		// A throw-away bed: fsync only slows the shared disk down.
		"--unsafe-no-fsync=true",
		"--log-level=warn",
	}
}

func (c *Cluster) apiServerArgs() []string {
	return []string{
		"--etcd-servers=" + c.etcdURL(),
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		fmt.Sprintf("--secure-port=%d", c.state.Ports.APIServer),
		"--cert-dir=" + c.layout.PKIDir(),
		"--tls-cert-file=" + c.pki(apiServerCertFile),
		"--tls-private-key-file=" + c.pki(apiServerKeyFile),
		"--client-ca-file=" + c.pki(caCertFile),
		"--service-account-key-file=" + c.pki(saPubFile),
		"--service-account-signing-key-file=" + c.pki(saKeyFile),
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		// Only an allocation range for the default "kubernetes" Service; no
		// traffic goes there, the bed has no proxy.
		"--service-cluster-ip-range=10.0.0.0/24",
		// A loopback address may not be written to Endpoints, so the
		// "kubernetes" Service gets none rather than an error every 10s.
		"--endpoint-reconciler-type=none",
		"--authorization-mode=Node,RBAC",
		"--feature-gates=" + c.apiServerGates(),
		"--profiling=false",
		"--v=1",
	}
}

func (c *Cluster) controllerManagerArgs() []string {
	kubeconfig := c.layout.ControllerManagerKubeconfig()
	return []string{
		"--kubeconfig=" + kubeconfig,
		"--authentication-kubeconfig=" + kubeconfig,
		"--authorization-kubeconfig=" + kubeconfig,
		"--bind-address=127.0.0.1",
		fmt.Sprintf("--secure-port=%d", c.state.Ports.ControllerMgr),
		"--tls-cert-file=" + c.pki(kcmServingCert),
		"--tls-private-key-file=" + c.pki(kcmServingKey),
		"--client-ca-file=" + c.pki(caCertFile),
		// The bed sets no front-proxy CA, so there is nothing to look up in
		// kube-system/extension-apiserver-authentication (looking only logs errors).
		"--authentication-skip-lookup=true",
		"--leader-elect=false",
		// The bootstrap role of system:kube-controller-manager only lets it
		// mint tokens; each controller then acts as its own service account
		// with the bootstrap controller roles, as in a real cluster.
		"--use-service-account-credentials=true",
		"--controllers=" + strings.Join(kcmControllers, ","),
		"--feature-gates=" + CrossNamespaceGate,
		"--profiling=false",
		"--v=2",
	}
}

func (c *Cluster) snapshotControllerArgs() []string {
	return []string{
		"--kubeconfig=" + c.layout.Kubeconfig(),
		"--leader-election=false",
		"--retry-crd-interval-max=60s",
		"--v=4",
	}
}

func (c *Cluster) csiSnapshotterArgs() []string {
	return []string{
		"--csi-address=unix://" + c.state.Socket,
		"--kubeconfig=" + c.layout.Kubeconfig(),
		"--leader-election=false",
		"--timeout=30s",
		"--v=4",
	}
}

// driverArgs follow the test driver's flags. Its klog output goes to
// logs/csi-test-driver.log, its JSON call log (one line per gRPC call) to
// logs/csi-test-driver-calls.log, the calls as they arrive to
// logs/csi-test-driver-arrivals.log.
func (c *Cluster) driverArgs() []string {
	args := []string{
		"--endpoint=unix://" + c.state.Socket,
		"--data-dir=" + c.layout.DriverDataDir(),
		"--drivername=" + DriverName,
		"--nodeid=" + DriverNodeID,
		"--log-file=" + c.layout.DriverCallLog(),
		"--arrival-log=" + c.layout.DriverArrivalLog(),
		fmt.Sprintf("--control-endpoint=127.0.0.1:%d", c.state.Ports.DriverControl),
	}
	return append(args, c.state.DriverArgs...)
}

// provisionerArgs are the sidecar's base flags followed by extra ones
// (CLUSTER_PROVISIONER_ARGS or RestartProvisioner's); flags given later win.
func (c *Cluster) provisionerArgs(extra []string) []string {
	return c.sidecarArgs(c.state.Ports.ProvisionerHTTP, extra)
}

// replicaArgs are the second replica's: the same, on its own metrics port.
func (c *Cluster) replicaArgs(extra []string) []string {
	return c.sidecarArgs(c.replicaHTTPPort(), extra)
}

func (c *Cluster) sidecarArgs(httpPort int, extra []string) []string {
	return c.sidecarArgsOn(c.state.Socket, httpPort, extra)
}

// sidecarArgsOn are a sidecar's base flags for the driver on socket, then extra.
func (c *Cluster) sidecarArgsOn(socket string, httpPort int, extra []string) []string {
	args := []string{
		"--csi-address=unix://" + socket,
		"--kubeconfig=" + c.layout.ProvisionerKubeconfig(),
		"--feature-gates=" + CrossNamespaceGate,
		// The sidecar's own gate (live sharing); Kubernetes has none.
		"--feature-gates=" + SharingGate,
		fmt.Sprintf("--http-endpoint=127.0.0.1:%d", httpPort),
		"--v=5",
	}
	return append(args, extra...)
}

// replicaHTTPPort is the second replica's metrics port (its default for a
// bed whose state predates it).
func (c *Cluster) replicaHTTPPort() int {
	if p := c.state.Ports.ProvisionerReplicaHTTP; p != 0 {
		return p
	}
	return defaultReplicaHTTPPort
}

// apiServerGates is kube-apiserver's --feature-gates value.
func (c *Cluster) apiServerGates() string {
	if c.state.APIServerGateOff {
		return strings.Replace(CrossNamespaceGate, "=true", "=false", 1)
	}
	return CrossNamespaceGate
}

// SetAPIServerCrossNamespaceGate restarts kube-apiserver (etcd and the other
// components stay) with the CrossNamespaceVolumeDataSource gate on or off, as
// on a managed cluster where alpha gates cannot be enabled: with it off,
// kube-apiserver drops spec.dataSourceRef.namespace from claims.
func (c *Cluster) SetAPIServerCrossNamespaceGate(ctx context.Context, on bool) error {
	c.state.APIServerGateOff = !on
	if err := c.saveState(); err != nil {
		return err
	}
	return c.RestartComponent(ctx, KubeAPIServer)
}
