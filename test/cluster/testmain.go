package cluster

import (
	"context"
	"fmt"
	"os"

	"k8s.io/klog/v2"
)

// Env vars a test binary reads to reuse a running bed instead of starting one.
const (
	// EnvReuse=1 reuses the bed running under this clone's _output/cluster
	// (started by `make cluster-up`).
	EnvReuse = "E2E_REUSE_CLUSTER"
	// EnvKubeconfig names the admin kubeconfig of a running bed elsewhere
	// (<bed>/kubeconfig, with the bed's state.json beside it).
	EnvKubeconfig = "E2E_KUBECONFIG"
)

// StartForTests is for a TestMain: it returns a running bed and a teardown
// function. With E2E_KUBECONFIG or E2E_REUSE_CLUSTER=1 it attaches to a bed
// that runs already and teardown leaves it running; otherwise it brings one
// up (building the tools first when the cache is cold, ~9 minutes on two
// cores) and teardown takes it down again. A bed that `make cluster-up`
// started without E2E_REUSE_CLUSTER is an error rather than a surprise reuse.
func StartForTests(ctx context.Context) (*Cluster, func(), error) {
	logger := klog.FromContext(ctx)
	noop := func() {}
	if path := os.Getenv(EnvKubeconfig); path != "" {
		c, err := LoadFromKubeconfig(path)
		if err != nil {
			return nil, noop, fmt.Errorf("%s: %w", EnvKubeconfig, err)
		}
		if err := c.Check(ctx); err != nil {
			return nil, noop, fmt.Errorf("bed of %s=%s is not running: %w", EnvKubeconfig, path, err)
		}
		return c, noop, nil
	}
	opts, err := OptionsFromEnv()
	if err != nil {
		return nil, noop, err
	}
	if os.Getenv(EnvReuse) == "1" {
		c, err := Load(opts.RepoRoot)
		if err != nil {
			return nil, noop, fmt.Errorf("%s=1: %w (start one with `make cluster-up`)", EnvReuse, err)
		}
		if err := c.Check(ctx); err != nil {
			return nil, noop, fmt.Errorf("%s=1 but the bed is not running: %w", EnvReuse, err)
		}
		logger.Info("Reusing running test bed", "kubeconfig", c.Kubeconfig())
		return c, noop, nil
	}
	if existing, err := Load(opts.RepoRoot); err == nil && existing.anyAlive() {
		return nil, noop, fmt.Errorf("a test bed is already running under %s: set %s=1 to test against it, or run `make cluster-down`",
			existing.layout.Root, EnvReuse)
	}
	c, err := Up(ctx, opts)
	if err != nil {
		return nil, noop, err
	}
	teardown := func() {
		if !c.startedHere {
			return
		}
		if os.Getenv("E2E_KEEP_CLUSTER") == "1" {
			logger.Info("Leaving the test bed running (E2E_KEEP_CLUSTER=1)", "kubeconfig", c.Kubeconfig())
			return
		}
		if err := c.Down(context.Background()); err != nil {
			logger.Error(err, "Tearing down the test bed")
			return
		}
		logger.Info("Test bed stopped")
	}
	return c, teardown, nil
}
