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

// ApplyProvisionerRBAC applies the RBAC manifest users deploy, as the admin.
func (c *Cluster) ApplyProvisionerRBAC(ctx context.Context) error {
	return c.kubectl(ctx, "apply", "-f", filepath.Join(c.state.RepoRoot, RBACManifest))
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
