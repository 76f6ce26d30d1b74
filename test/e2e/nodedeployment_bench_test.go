package e2e

import (
	"context"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/crossns/external-provisioner/test/cluster"
)

// TestBenchNodeDeploymentThroughput measures claims provisioned per second
// by one node instance and by three, each with the sidecar's default client
// budget (--kube-api-qps 5): late-binding claims, each selected for a node
// round robin, created at once; the clock runs from the first create to the
// last claim Bound. Not part of the suite: E2E_BENCH=1 runs it
// (docs/benchmarks.md).
func TestBenchNodeDeploymentThroughput(t *testing.T) {
	if os.Getenv("E2E_BENCH") != "1" {
		t.Skip("a benchmark: E2E_BENCH=1 runs it")
	}
	c := requireBed(t)
	const claims = 60
	cfg := bed.RESTConfig()
	cfg.QPS, cfg.Burst = 200, 400 // creating the claims must not be what is measured
	fast, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, nodes := range []int{1, 3} {
		t.Run(fmt.Sprintf("%d-nodes", nodes), func(t *testing.T) {
			for _, n := range localNodes[:nodes] {
				startInstance(t, cluster.Instance{Name: n, DriverName: localDriver, NodeID: "id-" + n, Topology: localNodeKey + "=" + n, Node: n,
					SidecarArgs: []string{"--node-deployment"}})
			}
			ns := createNamespace(t, c, fmt.Sprintf("bench-%d", nodes))
			class := localClass(t, c, ns, storagev1.VolumeBindingWaitForFirstConsumer)
			names := make([]string, claims)
			start := time.Now()
			var wg sync.WaitGroup
			errs := make(chan error, claims)
			for i := range claims {
				names[i] = fmt.Sprintf("c-%03d", i)
				wg.Add(1)
				go func(name, node string) {
					defer wg.Done()
					if _, err := fast.CoreV1().PersistentVolumeClaims(ns).Create(context.Background(), localClaim(ns, name, class, node), metav1.CreateOptions{}); err != nil {
						errs <- err
					}
				}(names[i], localNodes[i%nodes])
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
			// Two clocks: every PV created (the sidecars' work) and every
			// claim Bound (kube-controller-manager binds them afterwards,
			// about five writes per claim on its budget of 20 QPS).
			var created time.Duration
			eventually(t, 5*time.Minute, "every claim bound", func(ctx context.Context) (bool, string, error) {
				list, err := fast.CoreV1().PersistentVolumeClaims(ns).List(ctx, metav1.ListOptions{})
				if err != nil {
					return false, err.Error(), nil
				}
				pvs, err := fast.CoreV1().PersistentVolumes().List(ctx, metav1.ListOptions{})
				if err != nil {
					return false, err.Error(), nil
				}
				made := 0
				for _, pv := range pvs.Items {
					if ref := pv.Spec.ClaimRef; ref != nil && ref.Namespace == ns {
						made++
					}
				}
				if made == claims && created == 0 {
					created = time.Since(start)
				}
				bound := 0
				for _, pvc := range list.Items {
					if pvc.Status.Phase == corev1.ClaimBound {
						bound++
					}
				}
				return bound == claims && created > 0, fmt.Sprintf("%d PVs, %d of %d bound", made, bound, claims), nil
			})
			d := time.Since(start)
			t.Logf("BENCH node instances=%d claims=%d: PVs created in %s (%.1f claims/s), bound in %s (%.1f claims/s)", nodes, claims,
				created.Round(10*time.Millisecond), float64(claims)/created.Seconds(), d.Round(10*time.Millisecond), float64(claims)/d.Seconds())
			deleteClaimsAndWait(t, c, ns, names)
		})
	}
}
