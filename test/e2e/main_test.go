// Package e2e tests the provisioner against the local test bed
// (test/cluster): real etcd, kube-apiserver, kube-controller-manager,
// snapshot-controller, csi-snapshotter, the test CSI driver and the sidecar.
//
// TestMain brings a bed up (building the tools first when their cache is
// cold) and tears it down afterwards. E2E_REUSE_CLUSTER=1 tests against the
// bed of `make cluster-up` instead, E2E_KUBECONFIG=<bed>/kubeconfig against
// another clone's, and E2E_KEEP_CLUSTER=1 leaves a started bed running.
// -short skips the package without a bed.
package e2e

import (
	"context"
	"flag"
	"fmt"
	"os"
	"testing"
	"time"

	"k8s.io/klog/v2"

	"github.com/crossns/external-provisioner/test/cluster"
)

// bed is the running test bed; nil under -short.
var bed *cluster.Cluster

// bedStartTimeout covers a cold tool build (~9 minutes on two cores) plus
// bringing the bed up.
const bedStartTimeout = 25 * time.Minute

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	flag.Parse()
	if testing.Short() {
		fmt.Println("e2e: -short, not starting the test bed")
		return m.Run()
	}
	ctx, cancel := context.WithTimeout(context.Background(), bedStartTimeout)
	defer cancel()
	ctx = klog.NewContext(ctx, klog.Background())
	c, teardown, err := cluster.StartForTests(ctx)
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: no test bed: %v\n", err)
		return 1
	}
	defer teardown()
	bed = c
	return m.Run()
}
