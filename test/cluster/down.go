package cluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
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
	// Instances first (each sidecar before its driver), and components whose
	// PID files a broken state does not name, then the bed in reverse.
	order := append(slices.Clone(startOrder), c.instanceComponents()...)
	order = append(order, c.unknownPIDFiles(order)...)
	for i := len(order) - 1; i >= 0; i-- {
		comp := order[i]
		if err := c.stopComponent(ctx, comp); err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

// unknownPIDFiles are the components with a PID file that known does not
// list: instances of a bed whose state is gone.
func (c *Cluster) unknownPIDFiles(known []string) []string {
	files, _ := filepath.Glob(filepath.Join(c.layout.PIDDir(), "*.pid"))
	var out []string
	for _, f := range files {
		comp := strings.TrimSuffix(filepath.Base(f), ".pid")
		if !slices.Contains(known, comp) {
			out = append(out, comp)
		}
	}
	sort.Strings(out)
	return out
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
