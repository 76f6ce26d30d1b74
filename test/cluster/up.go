package cluster

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"k8s.io/klog/v2"
)

// Packages of this repository the bed builds into _output/bin.
const (
	driverPackage      = "./test/csidriver/cmd/csi-test-driver"
	provisionerPackage = "./cmd/csi-provisioner"
)

// maxSocketPath keeps the driver socket under the 108-byte sun_path limit.
const maxSocketPath = 100

// Up brings the bed up, or returns the one already running under
// opts.RepoRoot (StartedHere then reports false). A bed that is only partly
// running is an error: `make cluster-down` clears it. When starting fails,
// the components started so far are stopped and the logs kept.
func Up(ctx context.Context, opts Options) (*Cluster, error) {
	logger := klog.FromContext(ctx)
	layout := newLayout(opts.RepoRoot)
	if existing, err := loadFrom(layout); err == nil {
		if err := existing.Check(ctx); err == nil {
			logger.Info("Test bed already running", "kubeconfig", existing.Kubeconfig())
			return existing, nil
		} else if existing.anyAlive() {
			return nil, fmt.Errorf("a test bed under %s is only partly running (%v): run `make cluster-down` first", layout.Root, err)
		}
		logger.Info("Removing the state of a stopped test bed", "dir", layout.Root)
	}
	if err := os.RemoveAll(layout.Root); err != nil {
		return nil, fmt.Errorf("removing old bed state: %w", err)
	}
	for _, e := range envPorts {
		if p := *e.port(&opts.Ports); !portFree(p) {
			return nil, fmt.Errorf("port %d is in use on 127.0.0.1: stop what holds it or set %s", p, e.env)
		}
	}

	start := time.Now()
	tools, err := EnsureTools(ctx, opts.RepoRoot, opts.ToolCacheDir)
	if err != nil {
		return nil, err
	}
	c := &Cluster{layout: layout, tools: tools, startedHere: true}
	c.state = state{
		RepoRoot:        opts.RepoRoot,
		Ports:           opts.Ports,
		Socket:          socketPath(layout),
		ToolsBinDir:     tools.BinDir,
		ToolsKey:        tools.Key,
		Modules:         tools.Modules,
		WithProvisioner: opts.WithProvisioner,
		ProvisionerArgs: opts.ProvisionerArgs,
		DriverArgs:      opts.DriverArgs,
		ProvisionerRBAC: opts.ProvisionerRBAC,
	}
	if err := c.buildRepoBinaries(ctx); err != nil {
		return nil, err
	}
	if err := c.start(ctx); err != nil {
		logger.Error(err, "Test bed did not come up; stopping what was started, logs stay", "logs", layout.LogDir())
		c.stopAll(ctx)
		return nil, err
	}
	logger.Info("Test bed ready", "duration", time.Since(start).Round(100*time.Millisecond), "kubeconfig", c.Kubeconfig())
	return c, nil
}

// socketPath is _output/cluster/csi.sock, or a short path under the temp
// dir (unique per clone) when the clone's path is too long for a socket.
func socketPath(l Layout) string {
	p := l.defaultSocketPath()
	if len(p) <= maxSocketPath {
		return p
	}
	sum := sha256.Sum256([]byte(l.Root))
	return filepath.Join(os.TempDir(), "csi-testbed-"+hex.EncodeToString(sum[:])[:12], "csi.sock")
}

// buildRepoBinaries builds the test driver and (unless CLUSTER_PROVISIONER
// is none) the sidecar from this clone into _output/bin, so the bed always
// runs the code being tested.
func (c *Cluster) buildRepoBinaries(ctx context.Context) error {
	builds := []struct{ component, pkg string }{{TestDriver, driverPackage}}
	if c.state.WithProvisioner {
		builds = append(builds, struct{ component, pkg string }{Provisioner, provisionerPackage})
	}
	for _, b := range builds {
		if err := goBuild(ctx, c.state.RepoRoot, b.pkg, c.binPath(b.component)); err != nil {
			if b.component == Provisioner {
				return fmt.Errorf("%w\n(set CLUSTER_PROVISIONER=none to start the bed without the sidecar and run it by hand)", err)
			}
			return err
		}
	}
	return nil
}

// goBuild builds pkg of the main module to out, through a temporary name so a
// running copy of out is never overwritten in place.
func goBuild(ctx context.Context, repoRoot, pkg, out string) error {
	logger := klog.FromContext(ctx)
	t0 := time.Now()
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return err
	}
	tmp := out + ".tmp"
	cmd := exec.CommandContext(ctx, "go", "build", "-o", tmp, pkg)
	cmd.Dir = repoRoot
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	output, err := cmd.CombinedOutput()
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("building %s: %w\n%s", pkg, err, strings.TrimSpace(string(output)))
	}
	if err := os.Rename(tmp, out); err != nil {
		return fmt.Errorf("installing %s: %w", out, err)
	}
	logger.Info("Built", "package", pkg, "binary", out, "duration", time.Since(t0).Round(100*time.Millisecond))
	return nil
}

// start runs the components in order, each waited for before what needs it.
func (c *Cluster) start(ctx context.Context) error {
	l := c.layout
	for _, dir := range []string{l.Root, l.LogDir(), l.PIDDir(), l.DriverDataDir(), filepath.Dir(c.state.Socket)} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("creating %s: %w", dir, err)
		}
	}
	if err := c.saveState(); err != nil {
		return err
	}
	ca, admin, kcm, err := generatePKI(l.PKIDir())
	if err != nil {
		return err
	}
	if err := writeKubeconfig(l.Kubeconfig(), c.apiServerURL(), ca, admin); err != nil {
		return err
	}
	if err := writeKubeconfig(l.ControllerManagerKubeconfig(), c.apiServerURL(), ca, kcm); err != nil {
		return err
	}
	// The sidecar authenticates as its ServiceAccount's user name, so the
	// RBAC of deploy/kubernetes is what it runs with: every e2e test also
	// proves those rules suffice.
	sidecar, err := ca.issue(pkix.Name{CommonName: ProvisionerUser}, x509.ExtKeyUsageClientAuth, false)
	if err != nil {
		return fmt.Errorf("issuing the sidecar's client certificate: %w", err)
	}
	if err := writeKubeconfig(l.ProvisionerKubeconfig(), c.apiServerURL(), ca, sidecar); err != nil {
		return err
	}
	if err := c.connect(); err != nil {
		return err
	}
	if err := c.linkKubectl(); err != nil {
		return err
	}

	if err := c.startAndWait(ctx, Etcd, c.etcdArgs(), etcdHealthy(c.etcdURL())); err != nil {
		return err
	}
	if err := c.startAndWait(ctx, KubeAPIServer, c.apiServerArgs(), apiServerReady(c.kube)); err != nil {
		return err
	}
	if err := c.ApplySnapshotCRDs(ctx); err != nil {
		return err
	}
	if err := c.ApplyReferenceGrantCRD(ctx); err != nil {
		return err
	}
	if err := c.ApplyProvisionerRBAC(ctx); err != nil {
		return err
	}
	// These three need only the API server (and the CRDs): start them
	// together and then wait for each.
	group := []string{KubeControllerManager, SnapshotController, TestDriver}
	_ = os.Remove(c.state.Socket)
	children := make([]*child, len(group))
	probes := make([]probe, len(group))
	for i, comp := range group {
		if probes[i], err = c.readiness(comp); err != nil {
			return err
		}
		args, err := c.componentArgs(comp)
		if err != nil {
			return err
		}
		if children[i], err = c.startComponent(ctx, comp, args); err != nil {
			return err
		}
	}
	for i, comp := range group {
		if err := c.waitReady(ctx, comp, children[i], probes[i]); err != nil {
			return err
		}
	}
	snapshotterReady, err := c.readiness(CSISnapshotter)
	if err != nil {
		return err
	}
	if err := c.startAndWait(ctx, CSISnapshotter, c.csiSnapshotterArgs(), snapshotterReady); err != nil {
		return err
	}
	if err := c.createClasses(ctx); err != nil {
		return err
	}
	if c.state.WithProvisioner {
		if err := c.startProvisioner(ctx, c.state.ProvisionerArgs); err != nil {
			return err
		}
	}
	return nil
}

func (c *Cluster) startComponent(ctx context.Context, component string, args []string) (*child, error) {
	return startDetached(ctx, component, c.binPath(component), args, c.layout.LogPath(component), c.layout.PIDPath(component))
}

func (c *Cluster) startAndWait(ctx context.Context, component string, args []string, ready probe) error {
	ch, err := c.startComponent(ctx, component, args)
	if err != nil {
		return err
	}
	return c.waitReady(ctx, component, ch, ready)
}

// linkKubectl points _output/bin/kubectl at the cached kubectl.
func (c *Cluster) linkKubectl() error {
	link := c.KubectlPath()
	if err := os.MkdirAll(filepath.Dir(link), 0o755); err != nil {
		return err
	}
	tmp := link + ".tmp"
	_ = os.Remove(tmp)
	if err := os.Symlink(c.tools.Bin("kubectl"), tmp); err != nil {
		return fmt.Errorf("linking kubectl: %w", err)
	}
	if err := os.Rename(tmp, link); err != nil {
		return fmt.Errorf("linking kubectl: %w", err)
	}
	return nil
}
