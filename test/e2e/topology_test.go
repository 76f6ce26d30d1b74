package e2e

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/crossns/external-provisioner/test/cluster"
	"github.com/crossns/external-provisioner/test/csidriver"
)

const (
	// topoDriverName is the driver topologyBed runs beside the bed's own,
	// which has no topology.
	topoDriverName = "topo.csi.crossns.io"
	// topoKey is the one topology key it reports.
	topoKey       = "topology.crossns.io/zone"
	annSelected   = "volume.kubernetes.io/selected-node"
	rescheduleMax = 60 * time.Second
)

// topologyBed is a second test driver, with topology, served from the test
// process, and a second sidecar (the bed's binary, Topology gate on) for it.
type topologyBed struct {
	callLog string
}

// startTopologyBed starts both and stops them when the test ends. Call it
// before createNamespace, so the sidecar still runs while the namespace's
// claims are deleted.
func startTopologyBed(t *testing.T, zone string) *topologyBed {
	t.Helper()
	root, err := cluster.FindRepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	sidecar := filepath.Join(root, "_output", "bin", cluster.Provisioner)
	if _, err := os.Stat(sidecar); err != nil {
		t.Skipf("no sidecar binary of this clone to run a second sidecar from: %v", err)
	}
	dir := t.TempDir()
	tb := &topologyBed{callLog: filepath.Join(dir, "calls.log")}
	logFile, err := os.Create(tb.callLog)
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "csi.sock")
	d, err := csidriver.New(csidriver.Config{
		DriverName: topoDriverName, NodeID: "topo-node", DataDir: filepath.Join(dir, "data"),
		Topology: map[string]string{topoKey: zone}, CallLog: logFile, Endpoint: "unix://" + sock,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("topology driver: %v", err)
		}
		logFile.Close()
	})
	eventually(t, 10*time.Second, "the topology driver's socket", func(context.Context) (bool, string, error) {
		_, err := os.Stat(sock)
		return err == nil, fmt.Sprint(err), nil
	})

	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := lis.Addr().(*net.TCPAddr).Port
	lis.Close()
	sidecarLog := filepath.Join(dir, "csi-provisioner.log")
	out, err := os.Create(sidecarLog)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(sidecar, bed.ProvisionerArgs("--csi-address=unix://"+sock,
		fmt.Sprintf("--http-endpoint=127.0.0.1:%d", port), "--feature-gates=Topology=true")...)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting the topology sidecar: %v", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		out.Close()
		if t.Failed() {
			if data, err := os.ReadFile(sidecarLog); err == nil {
				t.Logf("topology sidecar log (last 8000 bytes):\n%s", tail(string(data), 8000))
			}
		}
	})
	eventually(t, 60*time.Second, "the topology sidecar's /metrics", func(ctx context.Context) (bool, string, error) {
		select {
		case <-exited:
			data, _ := os.ReadFile(sidecarLog)
			return false, "", fmt.Errorf("the topology sidecar exited:\n%s", tail(string(data), 4000))
		default:
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d/metrics", port), nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false, err.Error(), nil
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, resp.Status, nil
	})
	return tb
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// createVolumeCalls returns the CreateVolume requests the topology driver
// received for a claim.
func (tb *topologyBed) createVolumeCalls(t *testing.T, pvc *corev1.PersistentVolumeClaim) []*csi.CreateVolumeRequest {
	t.Helper()
	recs, err := csidriver.ReadCallLog(tb.callLog)
	if err != nil {
		t.Fatalf("reading the topology driver's call log: %v", err)
	}
	var out []*csi.CreateVolumeRequest
	for _, r := range csidriver.FilterCalls(recs, "CreateVolume") {
		req := &csi.CreateVolumeRequest{}
		if err := r.DecodeRequest(req); err != nil {
			t.Fatal(err)
		}
		if req.Name == "pvc-"+string(pvc.UID) {
			out = append(out, req)
		}
	}
	return out
}

// createNode makes a Node (there is no kubelet on the bed) and, with keys, the
// CSINode the topology driver's node plugin would register; both are deleted
// when the test ends.
func createNode(t *testing.T, c *clients, name string, labels map[string]string, keys []string) {
	t.Helper()
	ctx := testContext(t)
	if _, err := c.kube.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating Node %s: %v", name, err)
	}
	t.Cleanup(func() {
		if err := c.kube.CoreV1().Nodes().Delete(context.Background(), name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("deleting Node %s: %v", name, err)
		}
	})
	if keys == nil {
		return
	}
	cn := &storagev1.CSINode{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       storagev1.CSINodeSpec{Drivers: []storagev1.CSINodeDriver{{Name: topoDriverName, NodeID: name, TopologyKeys: keys}}},
	}
	if _, err := c.kube.StorageV1().CSINodes().Create(ctx, cn, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating CSINode %s: %v", name, err)
	}
	t.Cleanup(func() {
		if err := c.kube.StorageV1().CSINodes().Delete(context.Background(), name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("deleting CSINode %s: %v", name, err)
		}
	})
}

// lateClaim is a claim of class the scheduler has placed on node: the
// selected-node annotation is what the scheduler would write.
func lateClaim(ns, name, class, node string) *corev1.PersistentVolumeClaim {
	pvc := newClaim(ns, name, "1Mi")
	pvc.Spec.StorageClassName = ptr.To(class)
	pvc.Annotations = map[string]string{annSelected: node}
	return pvc
}

// waitRescheduled waits for the sidecar to give the claim back to the
// scheduler: the selected-node annotation is removed.
func waitRescheduled(t *testing.T, c *clients, ns, name string) {
	t.Helper()
	eventually(t, rescheduleMax, fmt.Sprintf("claim %s/%s to be given back to the scheduler", ns, name), func(ctx context.Context) (bool, string, error) {
		pvc, err := c.kube.CoreV1().PersistentVolumeClaims(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error(), nil
		}
		node, ok := pvc.Annotations[annSelected]
		return !ok, fmt.Sprintf("selected node %q; events: %s", node, eventSummary(ctx, c, ns, name)), nil
	})
}

// With late binding, a claim whose selected node has no CSINode for the
// driver (its node plugin never registered there) goes back to the scheduler
// to pick another node, with a Warning Event saying why, instead of failing
// over and over on that node; so does a claim whose node was deleted. On a
// node where the driver runs, the claim is provisioned in the node's zone.
func TestMissingSelectedNodeReschedules(t *testing.T) {
	c := requireBed(t)
	const zone = "zone-e2e"
	tb := startTopologyBed(t, zone)
	ns := createNamespace(t, c, "topology")
	ctx := testContext(t)

	class := bedName(ns, "late")
	_, err := c.kube.StorageV1().StorageClasses().Create(ctx, &storagev1.StorageClass{
		ObjectMeta:        metav1.ObjectMeta{Name: class},
		Provisioner:       topoDriverName,
		ReclaimPolicy:     ptr.To(corev1.PersistentVolumeReclaimDelete),
		VolumeBindingMode: ptr.To(storagev1.VolumeBindingWaitForFirstConsumer),
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("creating StorageClass %s: %v", class, err)
	}
	t.Cleanup(func() {
		_ = c.kube.StorageV1().StorageClasses().Delete(context.Background(), class, metav1.DeleteOptions{})
	})
	withDriver, withoutDriver := bedName(ns, "with-driver"), bedName(ns, "without-driver")
	createNode(t, c, withDriver, map[string]string{topoKey: zone}, []string{topoKey})
	createNode(t, c, withoutDriver, map[string]string{topoKey: zone}, nil)

	// The happy path first: it also shows the sidecar's caches hold both
	// Nodes before the next claims arrive.
	t.Run("node with the driver", func(t *testing.T) {
		pvc := createClaim(t, c, lateClaim(ns, "placed", class, withDriver))
		pv := waitBound(t, c, ns, pvc.Name)
		calls := tb.createVolumeCalls(t, pvc)
		if len(calls) == 0 {
			t.Fatal("the driver logged no CreateVolume for the claim")
		}
		pref := calls[len(calls)-1].GetAccessibilityRequirements().GetPreferred()
		if len(pref) == 0 || pref[0].GetSegments()[topoKey] != zone {
			t.Errorf("CreateVolume prefers %v, want the selected node's zone %q first", pref, zone)
		}
		if a := pv.Spec.NodeAffinity; a == nil || a.Required == nil || !strings.Contains(fmt.Sprint(a.Required), zone) {
			t.Errorf("PV node affinity %v, want the zone %q", a, zone)
		}
		// Deleted now, while the sidecar runs, so its volume goes too.
		if err := c.kube.CoreV1().PersistentVolumeClaims(ns).Delete(ctx, pvc.Name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		eventually(t, provisionWait, "the claim's PV to be deleted", func(ctx context.Context) (bool, string, error) {
			_, err := c.kube.CoreV1().PersistentVolumes().Get(ctx, pv.Name, metav1.GetOptions{})
			return apierrors.IsNotFound(err), fmt.Sprint(err), nil
		})
	})

	t.Run("node without the driver's CSINode", func(t *testing.T) {
		pvc := createClaim(t, c, lateClaim(ns, "no-csinode", class, withoutDriver))
		waitRescheduled(t, c, ns, pvc.Name)
		waitEventWith(t, c, ns, pvc.Name, corev1.EventTypeWarning, "ProvisioningFailed", provisionWait,
			fmt.Sprintf("CSINode %q does not exist", withoutDriver), "pick a node again")
		if calls := tb.createVolumeCalls(t, pvc); len(calls) > 0 {
			t.Errorf("the driver got %d CreateVolume calls for a claim on a node it does not run on", len(calls))
		}
		requirePending(t, c, ns, pvc.Name)
	})

	t.Run("node deleted", func(t *testing.T) {
		pvc := createClaim(t, c, lateClaim(ns, "no-node", class, bedName(ns, "deleted")))
		waitRescheduled(t, c, ns, pvc.Name)
		if calls := tb.createVolumeCalls(t, pvc); len(calls) > 0 {
			t.Errorf("the driver got %d CreateVolume calls for a claim on a deleted node", len(calls))
		}
		requirePending(t, c, ns, pvc.Name)
	})
}
