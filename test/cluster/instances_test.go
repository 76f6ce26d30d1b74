package cluster

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestInstanceComponents(t *testing.T) {
	c := &Cluster{layout: newLayout("/repo"), tools: &Tools{BinDir: "/tools"}}
	c.state.Socket = "/repo/_output/cluster/csi.sock"
	c.state.Instances = map[string]*Instance{
		"node-b": {Name: "node-b", DriverName: "local.csi.crossns.io", NodeID: "id-b", Topology: "topology.local/node=node-b",
			Node: "node-b", Socket: "/s/b.sock", HTTPPort: 30001, SidecarArgs: []string{"--node-deployment"}, SidecarEnv: []string{"X=1"}},
		"gcepd": {Name: "gcepd", DriverName: "pd.csi.storage.gke.io", DriverArgs: []string{"--volume-id-prefix=p/"}, Socket: "/s/g.sock", HTTPPort: 30002},
	}
	if got, want := c.instanceComponents(), []string{"csi-test-driver-gcepd", "csi-provisioner-gcepd", "csi-test-driver-node-b", "csi-provisioner-node-b"}; !slices.Equal(got, want) {
		t.Errorf("instanceComponents = %v, want %v", got, want)
	}
	for comp, want := range map[string]string{
		InstanceDriver("node-b"):  "/repo/_output/bin/csi-test-driver",
		InstanceSidecar("node-b"): "/repo/_output/bin/csi-provisioner",
		// an instance of a bed whose state is gone
		InstanceSidecar("gone"): "/repo/_output/bin/csi-provisioner",
		ProvisionerReplica:      "/repo/_output/bin/csi-provisioner",
		KubeAPIServer:           "/tools/kube-apiserver",
	} {
		if got := c.binPath(comp); got != want {
			t.Errorf("binPath(%s) = %s, want %s", comp, got, want)
		}
	}
	b := c.state.Instances["node-b"]
	sidecar := strings.Join(c.instanceArgs(b, true), " ")
	for _, want := range []string{"--csi-address=unix:///s/b.sock", "--http-endpoint=127.0.0.1:30001", "--node-deployment"} {
		if !strings.Contains(sidecar, want) {
			t.Errorf("sidecar args %q lack %s", sidecar, want)
		}
	}
	driver := strings.Join(c.instanceArgs(b, false), " ")
	for _, want := range []string{"--endpoint=unix:///s/b.sock", "--drivername=local.csi.crossns.io", "--nodeid=id-b", "--topology=topology.local/node=node-b",
		"--data-dir=/repo/_output/cluster/instances/node-b/csi-data", "--log-file=/repo/_output/cluster/instances/node-b/calls.log"} {
		if !strings.Contains(driver, want) {
			t.Errorf("driver args %q lack %s", driver, want)
		}
	}
	if env := strings.Join(c.instanceSidecarEnv(b), " "); !strings.Contains(env, "NODE_NAME=node-b") || !strings.HasSuffix(env, "X=1") {
		t.Errorf("sidecar env %q: want NODE_NAME=node-b and the instance's own last", env)
	}
	if got := strings.Join(c.instanceArgs(c.state.Instances["gcepd"], false), " "); strings.Contains(got, "--nodeid") || !strings.HasSuffix(got, "--volume-id-prefix=p/") {
		t.Errorf("driver args %q: want no node ID and the extra flag last", got)
	}
	// The bed's own sidecar still talks to the bed's driver.
	if got := c.sidecarArgs(28080, nil)[0]; got != "--csi-address=unix:///repo/_output/cluster/csi.sock" {
		t.Errorf("bed sidecar's first flag = %s", got)
	}
}

func TestInstanceNames(t *testing.T) {
	for name, ok := range map[string]bool{"node-a": true, "gcepd": true, "2": false, "": false, "a/b": false} {
		if err := validInstanceName(name); (err == nil) != ok {
			t.Errorf("validInstanceName(%q) = %v, want ok %v", name, err, ok)
		}
	}
}

// A bed whose state is gone is still stopped by its PID files, instances too.
func TestUnknownPIDFiles(t *testing.T) {
	c := &Cluster{layout: newLayout(t.TempDir()), tools: &Tools{}}
	if err := os.MkdirAll(c.layout.PIDDir(), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, comp := range []string{Etcd, InstanceSidecar("node-a"), InstanceDriver("node-a")} {
		if err := os.WriteFile(filepath.Join(c.layout.PIDDir(), comp+".pid"), []byte("1\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if got, want := c.unknownPIDFiles(startOrder), []string{"csi-provisioner-node-a", "csi-test-driver-node-a"}; !slices.Equal(got, want) {
		t.Errorf("unknownPIDFiles = %v, want %v", got, want)
	}
}
