package cluster

import (
	"context"
	"fmt"
	"os"

	"k8s.io/klog/v2"
)

// RestartComponent stops snapshot-controller or csi-snapshotter and starts
// it again with the flags it had, and returns once it is running. The sidecar
// has RestartProvisioner; the control plane and the driver (whose socket the
// sidecar holds) are not restarted under running tests.
func (c *Cluster) RestartComponent(ctx context.Context, component string) error {
	var args []string
	var marker string
	switch component {
	case SnapshotController:
		args, marker = c.snapshotControllerArgs(), snapshotControllerStarted
	case CSISnapshotter:
		args, marker = c.csiSnapshotterArgs(), csiSnapshotterStarted
	default:
		return fmt.Errorf("restarting %s is not supported", component)
	}
	if err := c.stopComponent(ctx, component); err != nil {
		return fmt.Errorf("stopping %s: %w", component, err)
	}
	// The new process appends to the old one's log: only what it writes
	// says it runs.
	logPath := c.layout.LogPath(component)
	var offset int64
	if st, err := os.Stat(logPath); err == nil {
		offset = st.Size()
	}
	klog.FromContext(ctx).Info("Restarting component", "component", component)
	ch, err := c.startComponent(ctx, component, args)
	if err != nil {
		return err
	}
	return c.waitReady(ctx, component, ch, logShowsAfter(logPath, marker, offset))
}
