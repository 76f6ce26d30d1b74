package cluster

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
)

// ProvisionerUser is the user the bed's sidecar authenticates as: the user
// name Kubernetes gives the ServiceAccount of deploy/kubernetes/rbac.yaml.
const ProvisionerUser = "system:serviceaccount:default:csi-provisioner"

// RBACManifest is the sidecar's RBAC, relative to the repository root.
const RBACManifest = "deploy/kubernetes/rbac.yaml"

// UpstreamRBACManifest lists upstream external-provisioner v6.3.0's rules
// under the same object names, relative to the repository root: the rules a
// user keeps when swapping upstream's image for ours.
const UpstreamRBACManifest = "test/cluster/testdata/upstream-v6.3.0-rbac.yaml"

// The RBAC modes of Options.ProvisionerRBAC.
const (
	RBACDeploy   = "deploy"
	RBACUpstream = "upstream"
)

// RBACManifestFor returns the manifest of an RBAC mode ("" is RBACDeploy).
func RBACManifestFor(mode string) (string, error) {
	switch mode {
	case "", RBACDeploy:
		return RBACManifest, nil
	case RBACUpstream:
		return UpstreamRBACManifest, nil
	}
	return "", fmt.Errorf("CLUSTER_PROVISIONER_RBAC=%q: want %q or %q", mode, RBACDeploy, RBACUpstream)
}

// ApplyProvisionerRBAC applies the RBAC of the bed's mode, as the admin.
func (c *Cluster) ApplyProvisionerRBAC(ctx context.Context) error {
	manifest, err := RBACManifestFor(c.state.ProvisionerRBAC)
	if err != nil {
		return err
	}
	return c.kubectl(ctx, "apply", "-f", filepath.Join(c.state.RepoRoot, manifest))
}

// UseProvisionerRBAC binds the sidecar to the RBAC of mode instead of the
// current one: both manifests name the same roles, which are deleted first so
// no rule of the other survives. kube-apiserver honours the change at once;
// restart the sidecar for it to look at its rules again.
func (c *Cluster) UseProvisionerRBAC(ctx context.Context, mode string) error {
	if _, err := RBACManifestFor(mode); err != nil {
		return err
	}
	if err := c.kubectl(ctx, "delete", "--ignore-not-found", "clusterrole", "external-provisioner-runner"); err != nil {
		return err
	}
	if err := c.kubectl(ctx, "delete", "--ignore-not-found", "-n", "default", "role", "external-provisioner-cfg"); err != nil {
		return err
	}
	c.state.ProvisionerRBAC = mode
	if err := c.ApplyProvisionerRBAC(ctx); err != nil {
		return err
	}
	return c.saveState()
}

// ProvisionerRBAC returns the RBAC mode the sidecar is bound to now.
func (c *Cluster) ProvisionerRBAC() string {
	if c.state.ProvisionerRBAC == "" {
		return RBACDeploy
	}
	return c.state.ProvisionerRBAC
}

// kubectl runs the bed's kubectl as the admin.
func (c *Cluster) kubectl(ctx context.Context, args ...string) error {
	cmd := exec.CommandContext(ctx, c.KubectlPath(), append([]string{"--kubeconfig=" + c.Kubeconfig()}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("kubectl %s: %w\n%s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}
