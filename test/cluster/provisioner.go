package cluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"k8s.io/klog/v2"
)

// startProvisioner starts the sidecar with extra flags and waits until its
// metrics endpoint answers.
func (c *Cluster) startProvisioner(ctx context.Context, extra []string) error {
	if _, err := os.Stat(c.binPath(Provisioner)); err != nil {
		return fmt.Errorf("no sidecar binary (build it with `make build` or bring the bed up without CLUSTER_PROVISIONER=none): %w", err)
	}
	if !portFree(c.state.Ports.ProvisionerHTTP) {
		return fmt.Errorf("sidecar http port %d is in use: another csi-provisioner may run (one started by hand?)", c.state.Ports.ProvisionerHTTP)
	}
	ch, err := c.startComponent(ctx, Provisioner, c.provisionerArgs(extra))
	if err != nil {
		return err
	}
	c.state.WithProvisioner = true
	c.state.ProvisionerArgs = extra
	if err := c.saveState(); err != nil {
		return err
	}
	return c.waitReady(ctx, Provisioner, ch, httpOK(c.ProvisionerMetricsURL()))
}

// RestartProvisioner stops the sidecar (if it runs) and starts it again with
// the base flags plus extraArgs, replacing the extra flags it ran with. It
// returns once the new sidecar serves its metrics.
func (c *Cluster) RestartProvisioner(ctx context.Context, extraArgs ...string) error {
	if err := c.StopProvisioner(ctx); err != nil {
		return err
	}
	// An exiting process may look gone in /proc while its listener is still
	// open; the new sidecar needs the port.
	for deadline := time.Now().Add(15 * time.Second); !portFree(c.state.Ports.ProvisionerHTTP); {
		if time.Now().After(deadline) {
			return fmt.Errorf("restarting csi-provisioner: port %d still in use after stopping it", c.state.Ports.ProvisionerHTTP)
		}
		time.Sleep(100 * time.Millisecond)
	}
	klog.FromContext(ctx).Info("Starting sidecar", "extraArgs", extraArgs)
	if err := c.startProvisioner(ctx, extraArgs); err != nil {
		return fmt.Errorf("restarting csi-provisioner: %w", err)
	}
	return nil
}

// StopProvisioner stops the sidecar and leaves the rest of the bed running;
// the bed then counts as running without a sidecar.
func (c *Cluster) StopProvisioner(ctx context.Context) error {
	if err := c.stopComponent(ctx, Provisioner); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("stopping csi-provisioner: %w", err)
	}
	c.state.WithProvisioner = false
	return c.saveState()
}

// BuildProvisioner rebuilds the sidecar from the bed's clone into
// _output/bin; a RestartProvisioner afterwards runs the new code.
func (c *Cluster) BuildProvisioner(ctx context.Context) error {
	return goBuild(ctx, c.state.RepoRoot, provisionerPackage, c.binPath(Provisioner))
}

// ProvisionerArgs returns the full flag list the sidecar gets with extraArgs,
// for running it by hand against the bed (CLUSTER_PROVISIONER=none).
func (c *Cluster) ProvisionerArgs(extraArgs ...string) []string {
	return c.provisionerArgs(extraArgs)
}

// ProvisionerExtraArgs are the extra flags the sidecar runs with now (those
// of CLUSTER_PROVISIONER_ARGS or of the last RestartProvisioner), so a
// harness that restarts it with others can put them back.
func (c *Cluster) ProvisionerExtraArgs() []string {
	return append([]string(nil), c.state.ProvisionerArgs...)
}
