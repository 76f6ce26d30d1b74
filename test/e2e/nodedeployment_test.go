package e2e

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/crossns/external-provisioner/test/cluster"
)

// Node mode on the bed: three nodes, each with a test driver of node-local
// volumes (its own socket, node ID and topology segment) and a sidecar with
// --node-deployment beside it, as a DaemonSet would run them. Nothing
// schedules pods on the bed: a test names the node a late-binding claim is
// for in its selected-node annotation, as the scheduler would.
const (
	localDriver  = "local.csi.crossns.io"
	localNodeKey = "topology.local.csi.crossns.io/node"
)

var localNodes = []string{"node-a", "node-b", "node-c"}

// startNodes runs the three node instances for the rest of the test, with
// short delays so competing for Immediate claims takes about a second.
func startNodes(t *testing.T, c *clients) {
	t.Helper()
	for _, n := range localNodes {
		startInstance(t, cluster.Instance{
			Name: n, DriverName: localDriver, NodeID: "id-" + n, Topology: localNodeKey + "=" + n, Node: n,
			SidecarArgs: []string{"--node-deployment", "--node-deployment-base-delay=500ms", "--node-deployment-max-delay=2s",
				"--enable-capacity", "--capacity-ownerref-level=-1", "--capacity-poll-interval=5s"},
		})
	}
	t.Cleanup(func() {
		// Published without an owner: nothing else deletes them.
		ctx := context.Background()
		err := c.kube.StorageV1().CSIStorageCapacities("default").DeleteCollection(ctx, metav1.DeleteOptions{},
			metav1.ListOptions{LabelSelector: "csi.storage.k8s.io/drivername=" + localDriver})
		if err != nil {
			t.Errorf("deleting the nodes' CSIStorageCapacity objects: %v", err)
		}
	})
}

// localClass creates a class of the node-local driver for the test.
func localClass(t *testing.T, c *clients, ns string, mode storagev1.VolumeBindingMode) string {
	t.Helper()
	class := &storagev1.StorageClass{
		ObjectMeta:        metav1.ObjectMeta{Name: bedName(ns, strings.ToLower(string(mode)))},
		Provisioner:       localDriver,
		ReclaimPolicy:     ptr.To(corev1.PersistentVolumeReclaimDelete),
		VolumeBindingMode: ptr.To(mode),
	}
	if _, err := c.kube.StorageV1().StorageClasses().Create(testContext(t), class, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.kube.StorageV1().StorageClasses().Delete(context.Background(), class.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("deleting StorageClass %s: %v", class.Name, err)
		}
	})
	return class.Name
}

func localClaim(ns, name, class, node string) *corev1.PersistentVolumeClaim {
	pvc := newClaim(ns, name, "1Mi")
	pvc.Spec.StorageClassName = ptr.To(class)
	if node != "" {
		pvc.Annotations = map[string]string{"volume.kubernetes.io/selected-node": node}
	}
	return pvc
}

// createdOn maps each volume name to the nodes whose driver has it, and to
// the nodes that were asked to create it.
func createdOn(t *testing.T) (has, asked map[string][]string) {
	t.Helper()
	has, asked = map[string][]string{}, map[string][]string{}
	for _, n := range localNodes {
		for _, v := range readInstanceVolumes(t, n) {
			has[v.Name] = append(has[v.Name], n)
		}
		seen := map[string]bool{}
		for _, req := range instanceCalls[csi.CreateVolumeRequest](t, n, "CreateVolume") {
			if !seen[req.Name] {
				seen[req.Name] = true
				asked[req.Name] = append(asked[req.Name], n)
			}
		}
	}
	return has, asked
}

// deleteClaimsAndWait deletes the claims and waits until their PVs and the
// volumes behind them are gone: each node's instance deletes its own.
func deleteClaimsAndWait(t *testing.T, c *clients, ns string, names []string) {
	t.Helper()
	ctx := testContext(t)
	var pvs []string
	for _, name := range names {
		if pvc, err := c.kube.CoreV1().PersistentVolumeClaims(ns).Get(ctx, name, metav1.GetOptions{}); err == nil && pvc.Spec.VolumeName != "" {
			pvs = append(pvs, pvc.Spec.VolumeName)
		}
		if err := c.kube.CoreV1().PersistentVolumeClaims(ns).Delete(ctx, name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			t.Fatal(err)
		}
	}
	eventually(t, provisionWait, "the claims' PVs and volumes to be gone", func(ctx context.Context) (bool, string, error) {
		var left []string
		for _, pv := range pvs {
			if _, err := c.kube.CoreV1().PersistentVolumes().Get(ctx, pv, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
				left = append(left, pv)
			}
		}
		has, _ := createdOn(t)
		return len(left) == 0 && len(has) == 0, fmt.Sprintf("PVs %v, volumes %v", left, has), nil
	})
}

// TestNodeDeploymentProvisionsOnTheSelectedNode: a late-binding claim the
// scheduler put on node-b is created by node-b's driver alone, its PV is
// bound to node-b, and deleting it deletes the volume there.
func TestNodeDeploymentProvisionsOnTheSelectedNode(t *testing.T) {
	c := requireBed(t)
	startNodes(t, c)
	ns := createNamespace(t, c, "node-wffc")
	class := localClass(t, c, ns, storagev1.VolumeBindingWaitForFirstConsumer)
	pvc := createClaim(t, c, localClaim(ns, "data", class, "node-b"))
	pv := waitBound(t, c, ns, "data")
	name := "pvc-" + string(pvc.UID)
	has, asked := createdOn(t)
	if fmt.Sprint(has[name], asked[name]) != "[node-b] [node-b]" {
		t.Errorf("volume %s is on %v and was asked of %v, want node-b alone", name, has[name], asked[name])
	}
	terms := pv.Spec.NodeAffinity.Required.NodeSelectorTerms
	if len(terms) != 1 || fmt.Sprint(terms[0].MatchExpressions) != fmt.Sprint([]corev1.NodeSelectorRequirement{{Key: localNodeKey, Operator: corev1.NodeSelectorOpIn, Values: []string{"node-b"}}}) {
		t.Errorf("PV node affinity %+v, want node-b", terms)
	}
	deleteClaimsAndWait(t, c, ns, []string{"data"})
	for _, n := range localNodes {
		asked := 0
		for _, d := range instanceCalls[csi.DeleteVolumeRequest](t, n, "DeleteVolume") {
			if d.VolumeId == pv.Spec.CSI.VolumeHandle {
				asked++
			}
		}
		if (n == "node-b") != (asked > 0) {
			t.Errorf("%s's driver got %d DeleteVolume calls for %s; want node-b's alone to be asked", n, asked, pv.Spec.CSI.VolumeHandle)
		}
	}
}

// TestNodeDeploymentSharesImmediateClaims: 30 Immediate claims, competed
// for by three nodes, are each created exactly once, on more than one node;
// with one node's sidecar killed, its claims wait and the others' go on;
// each node publishes the capacity of its own segment.
func TestNodeDeploymentSharesImmediateClaims(t *testing.T) {
	c := requireBed(t)
	ctx := testContext(t)
	startNodes(t, c)
	ns := createNamespace(t, c, "node-immediate")
	immediate := localClass(t, c, ns, storagev1.VolumeBindingImmediate)
	late := localClass(t, c, ns, storagev1.VolumeBindingWaitForFirstConsumer)

	var names []string
	for i := range 30 {
		names = append(names, fmt.Sprintf("claim-%02d", i))
		createClaim(t, c, localClaim(ns, names[i], immediate, ""))
	}
	perNode := map[string]int{}
	for _, name := range names {
		waitBound(t, c, ns, name)
		pvc, err := c.kube.CoreV1().PersistentVolumeClaims(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		node := pvc.Annotations["volume.kubernetes.io/selected-node"]
		perNode[node]++
		vol := "pvc-" + string(pvc.UID)
		has, asked := createdOn(t)
		if len(has[vol]) != 1 || has[vol][0] != node || len(asked[vol]) != 1 {
			t.Errorf("claim %s (selected node %q): volume on %v, asked of %v; want exactly once, on its node", name, node, has[vol], asked[vol])
		}
	}
	t.Logf("30 Immediate claims per node: %v", perNode)
	if len(perNode) < 2 {
		t.Errorf("all claims went to %v; want them spread over the nodes", perNode)
	}

	// Capacity: each node publishes its own segment of the late class.
	eventually(t, provisionWait, "a CSIStorageCapacity object per node", func(ctx context.Context) (bool, string, error) {
		list, err := c.kube.StorageV1().CSIStorageCapacities("default").List(ctx, metav1.ListOptions{LabelSelector: "csi.storage.k8s.io/drivername=" + localDriver})
		if err != nil {
			return false, err.Error(), nil
		}
		var got []string
		for _, sc := range list.Items {
			if sc.StorageClassName == late && sc.NodeTopology != nil {
				got = append(got, sc.NodeTopology.MatchLabels[localNodeKey]+"="+sc.Labels["csi.storage.k8s.io/managed-by"])
			}
		}
		sort.Strings(got)
		want := "[node-a=external-provisioner-node-a node-b=external-provisioner-node-b node-c=external-provisioner-node-c]"
		return fmt.Sprint(got) == want, fmt.Sprint(got), nil
	})

	// node-c's sidecar dies: its claim waits, the others' are provisioned.
	if err := bed.KillComponent(ctx, cluster.InstanceSidecar("node-c")); err != nil {
		t.Fatal(err)
	}
	createClaim(t, c, localClaim(ns, "on-c", late, "node-c"))
	createClaim(t, c, localClaim(ns, "on-a", late, "node-a"))
	var more []string
	for i := range 6 {
		more = append(more, fmt.Sprintf("later-%d", i))
		createClaim(t, c, localClaim(ns, more[i], immediate, ""))
	}
	waitBound(t, c, ns, "on-a")
	for _, name := range more {
		waitBound(t, c, ns, name)
		pvc, _ := c.kube.CoreV1().PersistentVolumeClaims(ns).Get(ctx, name, metav1.GetOptions{})
		if node := pvc.Annotations["volume.kubernetes.io/selected-node"]; node == "node-c" {
			t.Errorf("claim %s went to node-c, whose sidecar is down", name)
		}
	}
	if pvc, _ := c.kube.CoreV1().PersistentVolumeClaims(ns).Get(ctx, "on-c", metav1.GetOptions{}); pvc.Status.Phase != corev1.ClaimPending {
		t.Fatalf("claim on-c is %s while node-c's sidecar is down, want Pending", pvc.Status.Phase)
	}
	start := time.Now()
	if err := bed.StartComponent(ctx, cluster.InstanceSidecar("node-c")); err != nil {
		t.Fatal(err)
	}
	waitBound(t, c, ns, "on-c")
	t.Logf("on-c bound %s after node-c's sidecar came back", time.Since(start).Round(100*time.Millisecond))

	deleteClaimsAndWait(t, c, ns, append(append(names, more...), "on-a", "on-c"))
}
