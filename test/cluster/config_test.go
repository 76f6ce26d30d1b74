package cluster

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestOptionsFromEnv(t *testing.T) {
	for _, e := range envPorts {
		t.Setenv(e.env, "") // empty means default
	}
	t.Setenv("CLUSTER_APISERVER_PORT", "17443")
	t.Setenv("CLUSTER_PROVISIONER", "none")
	t.Setenv("CLUSTER_PROVISIONER_ARGS", "--extra-create-metadata  --v=6")
	t.Setenv("CLUSTER_TOOLS_CACHE", "/tmp/tools-cache")
	o, err := OptionsFromEnv()
	if err != nil {
		t.Fatal(err)
	}
	if o.Ports.APIServer != 17443 || o.Ports.Etcd != 23790 || o.Ports.ProvisionerHTTP != 28080 {
		t.Errorf("ports = %+v", o.Ports)
	}
	if o.WithProvisioner {
		t.Error("CLUSTER_PROVISIONER=none still starts the sidecar")
	}
	if got := strings.Join(o.ProvisionerArgs, " "); got != "--extra-create-metadata --v=6" {
		t.Errorf("ProvisionerArgs = %q", got)
	}
	if o.ToolCacheDir != "/tmp/tools-cache" {
		t.Errorf("ToolCacheDir = %q", o.ToolCacheDir)
	}
	if _, err := os.Stat(filepath.Join(o.RepoRoot, "test", "cluster", "config.go")); err != nil {
		t.Errorf("RepoRoot %s is not this repository: %v", o.RepoRoot, err)
	}
}

func TestOptionsFromEnvRejectsBadPorts(t *testing.T) {
	t.Setenv("CLUSTER_ETCD_PORT", "etcd")
	if _, err := OptionsFromEnv(); err == nil || !strings.Contains(err.Error(), "CLUSTER_ETCD_PORT") {
		t.Errorf("err = %v, want one naming CLUSTER_ETCD_PORT", err)
	}
}

func TestToolCacheFollowsXDG(t *testing.T) {
	t.Setenv("CLUSTER_TOOLS_CACHE", "")
	t.Setenv("XDG_CACHE_HOME", "/xdg")
	got, err := toolCacheRoot()
	if err != nil || got != "/xdg/csi-provisioner-testbed" {
		t.Errorf("toolCacheRoot = %q, %v", got, err)
	}
}

func TestSocketPathStaysShort(t *testing.T) {
	short := newLayout("/work/main")
	if got := socketPath(short); got != "/work/main/_output/cluster/csi.sock" {
		t.Errorf("socketPath = %q", got)
	}
	long := newLayout("/" + strings.Repeat("deep/", 30))
	got := socketPath(long)
	if len(got) > maxSocketPath || !strings.HasSuffix(got, "/csi.sock") {
		t.Errorf("socketPath = %q (%d bytes)", got, len(got))
	}
}
