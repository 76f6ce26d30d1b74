// Command testbed starts, stops and inspects the local Kubernetes test bed
// of the provisioner (see test/cluster). make cluster-up / cluster-down /
// cluster-tools run it.
//
//	testbed up       build what is missing, start the bed (or report the running one)
//	testbed down     stop every component by PID, remove _output/cluster
//	testbed status   PID, liveness and RSS of each component
//	testbed env      shell exports for the running bed (eval "$(testbed env)")
//	testbed tools    build or find the cached tools, print their directory
//	testbed restart-provisioner [-- flags]
//	                 rebuild the sidecar and restart it with extra flags
//	testbed kill|stop|start|restart <component>
//	                 SIGKILL, stop (SIGTERM), start again or restart one
//	                 component of a running bed (not etcd), by hand
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"k8s.io/klog/v2"

	"github.com/crossns/external-provisioner/test/cluster"
)

const usage = `usage: testbed [klog flags] up|down|status|env|tools
       testbed [klog flags] restart-provisioner [-- extra sidecar flags]
       testbed [klog flags] kill|stop|start|restart <component>
         components: kube-apiserver kube-controller-manager snapshot-controller
         csi-snapshotter csi-test-driver csi-provisioner csi-provisioner-2

Environment:
  CLUSTER_PROVISIONER=none        start the bed without the csi-provisioner sidecar
  CLUSTER_PROVISIONER_ARGS="..."  extra sidecar flags
  CLUSTER_DRIVER_ARGS="..."       extra test driver flags (e.g. --topology=zone=a)
  CLUSTER_PROVISIONER_RBAC=upstream  bind the sidecar to upstream external-provisioner
                                  v6.3.0's RBAC (test/cluster/testdata) instead of deploy/kubernetes'
  CLUSTER_ETCD_PORT (23790) CLUSTER_ETCD_PEER_PORT (23800) CLUSTER_APISERVER_PORT (16443)
  CLUSTER_KCM_PORT (20257) CLUSTER_PROVISIONER_HTTP_PORT (28080) CLUSTER_DRIVER_CONTROL_PORT (28090)
  CLUSTER_PROVISIONER_REPLICA_HTTP_PORT (28081)
  CLUSTER_TOOLS_CACHE             tool cache root (default ${XDG_CACHE_HOME:-$HOME/.cache}/csi-provisioner-testbed)
`

func main() {
	klog.InitFlags(nil)
	flag.Usage = func() { fmt.Fprint(os.Stderr, usage) }
	flag.Parse()
	control := map[string]bool{"kill": true, "stop": true, "start": true, "restart": true}
	switch {
	case flag.NArg() < 1,
		control[flag.Arg(0)] && flag.NArg() != 2,
		!control[flag.Arg(0)] && flag.NArg() > 1 && flag.Arg(0) != "restart-provisioner":
		flag.Usage()
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx = klog.NewContext(ctx, klog.Background())

	var err error
	switch flag.Arg(0) {
	case "up":
		err = up(ctx)
	case "down":
		err = down(ctx)
	case "status":
		err = status(ctx)
	case "env":
		err = env()
	case "tools":
		err = buildTools(ctx)
	case "restart-provisioner":
		err = restartProvisioner(ctx, flag.Args()[1:])
	case "kill", "stop", "start", "restart":
		err = controlComponent(ctx, flag.Arg(0), flag.Arg(1))
	default:
		flag.Usage()
		os.Exit(2)
	}
	klog.Flush()
	if err != nil {
		fmt.Fprintf(os.Stderr, "testbed %s: %v\n", flag.Arg(0), err)
		os.Exit(1)
	}
}

func up(ctx context.Context) error {
	opts, err := cluster.OptionsFromEnv()
	if err != nil {
		return err
	}
	start := time.Now()
	c, err := cluster.Up(ctx, opts)
	if err != nil {
		return err
	}
	if c.StartedHere() {
		fmt.Printf("Test bed ready in %s.\n", time.Since(start).Round(100*time.Millisecond))
	} else {
		fmt.Println("Test bed already running.")
	}
	printStatus(c)
	root, _ := filepath.Rel(opts.RepoRoot, filepath.Dir(c.Kubeconfig()))
	fmt.Printf(`
Use it:
  export KUBECONFIG=%s
  _output/bin/kubectl get storageclass,volumesnapshotclass
  tail -f %s/logs/<component>.log      (the driver's JSON call log: %s)
Run the sidecar by hand: make cluster-down && CLUSTER_PROVISIONER=none make cluster-up, then
  _output/bin/csi-provisioner %s
Stop it: make cluster-down
`, c.Kubeconfig(), root, c.DriverCallLogPath(), strings.Join(c.ProvisionerArgs(), " "))
	return nil
}

func down(ctx context.Context) error {
	root, err := cluster.FindRepoRoot()
	if err != nil {
		return err
	}
	if err := cluster.DownAt(ctx, root); err != nil {
		return err
	}
	fmt.Println("Test bed stopped; state removed, tool cache kept.")
	return nil
}

func status(ctx context.Context) error {
	root, err := cluster.FindRepoRoot()
	if err != nil {
		return err
	}
	c, err := cluster.Load(root)
	if err != nil {
		return err
	}
	printStatus(c)
	if err := c.Check(ctx); err != nil {
		return fmt.Errorf("bed not healthy: %w", err)
	}
	return nil
}

func printStatus(c *cluster.Cluster) {
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "COMPONENT\tPID\tSTATE\tRSS\tLOG")
	var total int64
	for _, st := range c.Status() {
		state, rss := "stopped", "-"
		if st.Alive {
			state, rss = "running", fmt.Sprintf("%.1f MiB", float64(st.RSSKiB)/1024)
			total += st.RSSKiB
		}
		fmt.Fprintf(w, "%s\t%d\t%s\t%s\t%s\n", st.Name, st.PID, state, rss, st.Log)
	}
	fmt.Fprintf(w, "total\t\t\t%.1f MiB\t\n", float64(total)/1024)
	w.Flush()
}

func env() error {
	root, err := cluster.FindRepoRoot()
	if err != nil {
		return err
	}
	c, err := cluster.Load(root)
	if err != nil {
		return err
	}
	fmt.Printf("export KUBECONFIG=%s\n", c.Kubeconfig())
	fmt.Printf("export CSI_ENDPOINT=unix://%s\n", c.DriverSocket())
	fmt.Printf("export CSI_DRIVER_DATA_DIR=%s\n", c.DriverDataDir())
	fmt.Printf("export CSI_DRIVER_CALL_LOG=%s\n", c.DriverCallLogPath())
	fmt.Printf("export CSI_DRIVER_CONTROL_URL=%s\n", c.DriverControlURL())
	fmt.Printf("export PROVISIONER_METRICS_URL=%s\n", c.ProvisionerMetricsURL())
	fmt.Printf("export PATH=%s:$PATH\n", filepath.Dir(c.KubectlPath()))
	return nil
}

func buildTools(ctx context.Context) error {
	opts, err := cluster.OptionsFromEnv()
	if err != nil {
		return err
	}
	start := time.Now()
	t, err := cluster.EnsureTools(ctx, opts.RepoRoot, opts.ToolCacheDir)
	if err != nil {
		return err
	}
	fmt.Printf("Tools in %s (%s)\n", t.BinDir, time.Since(start).Round(10*time.Millisecond))
	return nil
}

func restartProvisioner(ctx context.Context, extra []string) error {
	if len(extra) > 0 && extra[0] == "--" {
		extra = extra[1:]
	}
	root, err := cluster.FindRepoRoot()
	if err != nil {
		return err
	}
	c, err := cluster.Load(root)
	if err != nil {
		return err
	}
	if err := c.BuildProvisioner(ctx); err != nil {
		return err
	}
	if err := c.RestartProvisioner(ctx, extra...); err != nil {
		return err
	}
	fmt.Printf("csi-provisioner restarted: %s\n", strings.Join(c.ProvisionerArgs(extra...), " "))
	return nil
}

// controlComponent kills, stops, starts or restarts one component.
func controlComponent(ctx context.Context, verb, component string) error {
	root, err := cluster.FindRepoRoot()
	if err != nil {
		return err
	}
	c, err := cluster.Load(root)
	if err != nil {
		return err
	}
	switch verb {
	case "kill":
		err = c.KillComponent(ctx, component)
	case "stop":
		err = c.StopComponent(ctx, component)
	case "start":
		err = c.StartComponent(ctx, component)
	case "restart":
		err = c.RestartComponent(ctx, component)
	}
	if err != nil {
		return err
	}
	fmt.Printf("%s: %s done\n", component, verb)
	return nil
}
