package cluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"k8s.io/klog/v2"
)

// Component control for fault injection: the soak harness (test/soak) kills
// and restarts single components of a running bed, the way a node or a
// kubelet would. etcd is not among them: the bed keeps no second copy of its
// data.

// restartable are the components KillComponent, StopComponent and
// StartComponent accept.
var restartable = map[string]bool{
	KubeAPIServer: true, KubeControllerManager: true, SnapshotController: true,
	TestDriver: true, CSISnapshotter: true, Provisioner: true, ProvisionerReplica: true,
}

func (c *Cluster) checkRestartable(component string) error {
	if inst, _ := c.instanceOf(component); inst != nil {
		return nil
	}
	if !restartable[component] {
		return fmt.Errorf("component %q cannot be stopped and started on its own", component)
	}
	return nil
}

// ComponentPID returns the PID of a running component, or 0.
func (c *Cluster) ComponentPID(component string) int {
	pid, _ := readPID(c.layout.PIDPath(component))
	if pid == 0 || !processAlive(pid, filepath.Base(c.binPath(component))) {
		return 0
	}
	return pid
}

// KillComponent sends SIGKILL to the component's process group, as a crash
// or an OOM kill would, and waits until it has exited. The bed's state is
// unchanged: the component still counts as part of the bed (Check reports it
// not running) until StartComponent starts it again.
func (c *Cluster) KillComponent(ctx context.Context, component string) error {
	if err := c.checkRestartable(component); err != nil {
		return err
	}
	pid := c.ComponentPID(component)
	if pid == 0 {
		return nil
	}
	klog.FromContext(ctx).V(2).Info("Killing component", "component", component, "pid", pid)
	if err := syscall.Kill(-pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("killing %s (pid %d): %w", component, pid, err)
	}
	if !waitExit(pid, filepath.Base(c.binPath(component)), 10*time.Second) {
		return fmt.Errorf("%s (pid %d) still running 10s after SIGKILL", component, pid)
	}
	return nil
}

// StopComponent stops the component gracefully (SIGTERM, then SIGKILL after
// 15 s). Like KillComponent it leaves the bed's state unchanged.
func (c *Cluster) StopComponent(ctx context.Context, component string) error {
	if err := c.checkRestartable(component); err != nil {
		return err
	}
	pid := c.ComponentPID(component)
	if pid == 0 {
		return nil
	}
	return stopProcess(ctx, component, pid, filepath.Base(c.binPath(component)))
}

// StartComponent starts a stopped (or killed) component with the flags it
// ran with and waits until it is ready. A component that runs already is
// left alone.
func (c *Cluster) StartComponent(ctx context.Context, component string) error {
	if err := c.checkRestartable(component); err != nil {
		return err
	}
	if c.ComponentPID(component) != 0 {
		return nil
	}
	if inst, _ := c.instanceOf(component); inst != nil {
		return c.startInstanceComponent(ctx, component)
	}
	switch component {
	case Provisioner:
		return c.startProvisioner(ctx, c.state.ProvisionerArgs)
	case ProvisionerReplica:
		return c.startReplica(ctx, c.state.ReplicaArgs)
	}
	args, err := c.componentArgs(component)
	if err != nil {
		return err
	}
	ready, err := c.readiness(component)
	if err != nil {
		return err
	}
	return c.startAndWait(ctx, component, args, ready)
}

// RestartComponent stops a component gracefully and starts it again.
func (c *Cluster) RestartComponent(ctx context.Context, component string) error {
	if err := c.StopComponent(ctx, component); err != nil {
		return err
	}
	return c.StartComponent(ctx, component)
}

// componentArgs are the flags a component of the bed runs with.
func (c *Cluster) componentArgs(component string) ([]string, error) {
	switch component {
	case Etcd:
		return c.etcdArgs(), nil
	case KubeAPIServer:
		return c.apiServerArgs(), nil
	case KubeControllerManager:
		return c.controllerManagerArgs(), nil
	case SnapshotController:
		return c.snapshotControllerArgs(), nil
	case CSISnapshotter:
		return c.csiSnapshotterArgs(), nil
	case TestDriver:
		return c.driverArgs(), nil
	case Provisioner:
		return c.provisionerArgs(c.state.ProvisionerArgs), nil
	case ProvisionerReplica:
		return c.replicaArgs(c.state.ReplicaArgs), nil
	}
	return nil, fmt.Errorf("unknown component %q", component)
}

// readiness is the check that a component just started is ready. The
// snapshot components are ready once their log shows they started: only
// what is written from now on counts, since the log holds the lines of the
// process before.
func (c *Cluster) readiness(component string) (probe, error) {
	switch component {
	case Etcd:
		return etcdHealthy(c.etcdURL()), nil
	case KubeAPIServer:
		return apiServerReady(c.kube), nil
	case KubeControllerManager:
		ca, err := os.ReadFile(c.pki(caCertFile))
		if err != nil {
			return nil, fmt.Errorf("reading the bed's CA: %w", err)
		}
		return httpsHealthy(fmt.Sprintf("https://127.0.0.1:%d/healthz", c.state.Ports.ControllerMgr), ca), nil
	case SnapshotController:
		return logShowsFrom(c.layout.LogPath(component), logSize(c.layout.LogPath(component)), snapshotControllerStarted), nil
	case CSISnapshotter:
		return logShowsFrom(c.layout.LogPath(component), logSize(c.layout.LogPath(component)), csiSnapshotterStarted), nil
	case TestDriver:
		return csiProbe(c.state.Socket, DriverName), nil
	case Provisioner:
		return httpOK(c.ProvisionerMetricsURL()), nil
	case ProvisionerReplica:
		return httpOK(c.ProvisionerReplicaMetricsURL()), nil
	}
	return nil, fmt.Errorf("unknown component %q", component)
}

// logSize is the current size of a log, 0 when it does not exist yet.
func logSize(path string) int64 {
	st, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return st.Size()
}
