package cluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"k8s.io/klog/v2"
)

// Down stops every component of the bed by PID, in reverse start order, and
// removes _output/cluster. The tool cache stays.
func (c *Cluster) Down(ctx context.Context) error {
	errs := c.stopAll(ctx)
	if dir := filepath.Dir(c.state.Socket); c.state.Socket != "" && dir != c.layout.Root && strings.HasPrefix(filepath.Base(dir), "csi-testbed-") {
		_ = os.RemoveAll(dir)
	}
	if err := os.RemoveAll(c.layout.Root); err != nil {
		errs = append(errs, fmt.Errorf("removing %s: %w", c.layout.Root, err))
	}
	return errors.Join(errs...)
}

// DownAt stops the bed under repoRoot, if any, and removes its state. It
// works on a bed whose state file is gone or broken by stopping what the
// PID files name.
func DownAt(ctx context.Context, repoRoot string) error {
	layout := newLayout(repoRoot)
	c, err := loadFrom(layout)
	if err != nil {
		klog.FromContext(ctx).V(2).Info("No usable bed state, stopping by PID files only", "err", err)
		c = &Cluster{layout: layout, tools: &Tools{}}
	}
	return c.Down(ctx)
}

// stopAll stops the components in reverse start order; kube-apiserver goes
// before etcd, or its shutdown hangs on storage.
func (c *Cluster) stopAll(ctx context.Context) []error {
	var errs []error
	for i := len(startOrder) - 1; i >= 0; i-- {
		comp := startOrder[i]
		if err := c.stopComponent(ctx, comp); err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

func (c *Cluster) stopComponent(ctx context.Context, component string) error {
	pidPath := c.layout.PIDPath(component)
	pid, err := readPID(pidPath)
	if err != nil || pid == 0 {
		return err
	}
	if err := stopProcess(ctx, component, pid, filepath.Base(c.binPath(component))); err != nil {
		return err
	}
	return os.Remove(pidPath)
}
