package cluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"k8s.io/klog/v2"
)

// A second sidecar replica lets tests run the sidecar as a Deployment with
// two replicas and leader election does: same binary, same identity
// (client certificate), same driver socket, its own metrics port and log
// (logs/csi-provisioner-2.log). Both replicas must run with
// --leader-election, or both provision.

// ProvisionerReplicaMetricsURL is the second replica's metrics URL.
func (c *Cluster) ProvisionerReplicaMetricsURL() string {
	return fmt.Sprintf("http://127.0.0.1:%d/metrics", c.replicaHTTPPort())
}

// StartProvisionerReplica starts the second replica with the sidecar's base
// flags plus extraArgs (stopping one that runs first) and returns once it
// serves its metrics. Pass --leader-election, as to the first replica.
func (c *Cluster) StartProvisionerReplica(ctx context.Context, extraArgs ...string) error {
	if err := c.StopProvisionerReplica(ctx); err != nil {
		return err
	}
	for deadline := time.Now().Add(15 * time.Second); !portFree(c.replicaHTTPPort()); {
		if time.Now().After(deadline) {
			return fmt.Errorf("starting %s: port %d still in use", ProvisionerReplica, c.replicaHTTPPort())
		}
		time.Sleep(100 * time.Millisecond)
	}
	klog.FromContext(ctx).Info("Starting second sidecar replica", "extraArgs", extraArgs)
	if err := c.startReplica(ctx, extraArgs); err != nil {
		return fmt.Errorf("starting %s: %w", ProvisionerReplica, err)
	}
	return nil
}

// StopProvisionerReplica stops the second replica, if it runs; the bed then
// runs without it.
func (c *Cluster) StopProvisionerReplica(ctx context.Context) error {
	if err := c.stopComponent(ctx, ProvisionerReplica); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("stopping %s: %w", ProvisionerReplica, err)
	}
	if !c.state.WithReplica && c.state.ReplicaArgs == nil {
		return nil
	}
	c.state.WithReplica, c.state.ReplicaArgs = false, nil
	return c.saveState()
}

// startReplica starts the second replica and waits for its metrics.
func (c *Cluster) startReplica(ctx context.Context, extra []string) error {
	if _, err := os.Stat(c.binPath(ProvisionerReplica)); err != nil {
		return fmt.Errorf("no sidecar binary (build it with `make build`): %w", err)
	}
	if !portFree(c.replicaHTTPPort()) {
		return fmt.Errorf("%s http port %d is in use", ProvisionerReplica, c.replicaHTTPPort())
	}
	ch, err := c.startComponent(ctx, ProvisionerReplica, c.replicaArgs(extra))
	if err != nil {
		return err
	}
	c.state.WithReplica, c.state.ReplicaArgs = true, extra
	if err := c.saveState(); err != nil {
		return err
	}
	return c.waitReady(ctx, ProvisionerReplica, ch, httpOK(c.ProvisionerReplicaMetricsURL()))
}
