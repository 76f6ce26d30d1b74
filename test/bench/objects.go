package bench

import (
	"context"
	"fmt"
	"sync"
	"time"

	snapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	snapclient "github.com/kubernetes-csi/external-snapshotter/client/v8/clientset/versioned"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	gatewayv1beta1 "sigs.k8s.io/gateway-api/apis/v1beta1"
	gatewayclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"

	"github.com/crossns/external-provisioner/test/cluster"
)

// runLabelKey labels every namespace and claim the bench makes with the
// bench invocation, so its watches see only its claims and a later bench
// finds what an interrupted one left behind.
const runLabelKey = "bench.crossns.io/run"

const (
	// claimSize is the size of the source and of every restore; it holds
	// the source files with room to spare (the test driver does not
	// enforce it).
	claimSize = "64Mi"
	// snapshotName is the VolumeSnapshot in the source namespace.
	snapshotName = "nightly"
	pollInterval = 250 * time.Millisecond
)

// clients talk to the bed as its admin, with limits far above anything the
// sidecar uses, so creating claims is never what the bench measures.
type clients struct {
	kube    kubernetes.Interface
	snaps   snapclient.Interface
	gateway gatewayclient.Interface
}

func newClients(cfg *rest.Config) (*clients, error) {
	cfg = rest.CopyConfig(cfg)
	cfg.QPS, cfg.Burst = 5000, 10000
	c := &clients{}
	var err error
	if c.kube, err = kubernetes.NewForConfig(cfg); err != nil {
		return nil, fmt.Errorf("kube client: %w", err)
	}
	if c.snaps, err = snapclient.NewForConfig(cfg); err != nil {
		return nil, fmt.Errorf("snapshot client: %w", err)
	}
	if c.gateway, err = gatewayclient.NewForConfig(cfg); err != nil {
		return nil, fmt.Errorf("gateway-api client: %w", err)
	}
	return c, nil
}

// createNamespaces makes the namespaces, labelled with the run.
// createNumberedNamespaces creates <prefix>-00 … <prefix>-(n-1) and returns their names.
func (c *clients) createNumberedNamespaces(ctx context.Context, run, prefix string, n int) ([]string, error) {
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("%s-%02d", prefix, i)
	}
	return names, c.createNamespaces(ctx, run, names)
}

func (c *clients) createNamespaces(ctx context.Context, run string, names []string) error {
	for _, n := range names {
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: n, Labels: map[string]string{runLabelKey: run}}}
		if _, err := c.kube.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("creating namespace %s: %w", n, err)
		}
	}
	return nil
}

// restoreClaim is a claim of the bed's class restoring the source snapshot.
func restoreClaim(ns, name, run, srcNS string) *corev1.PersistentVolumeClaim {
	return &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{runLabelKey: run}},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes:      []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			StorageClassName: ptr.To(cluster.StorageClassName),
			Resources:        corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse(claimSize)}},
			DataSourceRef: &corev1.TypedObjectReference{
				APIGroup: ptr.To(snapshotv1.GroupName), Kind: "VolumeSnapshot", Name: snapshotName, Namespace: ptr.To(srcNS),
			},
		},
	}
}

// created is a claim the bench made and when it sent the request.
type created struct {
	uid             types.UID
	namespace, name string
	sent            time.Time
}

// createClaims creates n restore claims spread round-robin over namespaces,
// all at once: one goroutine each, through the high-limit client. Latencies
// are measured from the moment each request was sent.
func (c *clients) createClaims(ctx context.Context, run, srcNS, prefix string, namespaces []string, n int) ([]created, error) {
	out := make([]created, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pvc := restoreClaim(namespaces[i%len(namespaces)], fmt.Sprintf("%s-%03d", prefix, i), run, srcNS)
			sent := time.Now()
			got, err := c.kube.CoreV1().PersistentVolumeClaims(pvc.Namespace).Create(ctx, pvc, metav1.CreateOptions{})
			if err != nil {
				errs[i] = fmt.Errorf("creating claim %s/%s: %w", pvc.Namespace, pvc.Name, err)
				return
			}
			out[i] = created{uid: got.UID, namespace: got.Namespace, name: got.Name, sent: sent}
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

func uidsOf(cs []created) []types.UID {
	out := make([]types.UID, len(cs))
	for i, c := range cs {
		out[i] = c.uid
	}
	return out
}

// createGrants lets claims from namespaces restore the snapshot, in as few
// ReferenceGrants as the CRD's limit of maxGrantFrom `from` entries allows.
func (c *clients) createGrants(ctx context.Context, srcNS, prefix string, namespaces []string) ([]string, error) {
	var names []string
	for i := 0; i < len(namespaces); i += maxGrantFrom {
		chunk := namespaces[i:min(i+maxGrantFrom, len(namespaces))]
		g := &gatewayv1beta1.ReferenceGrant{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("%s-%d", prefix, i/maxGrantFrom), Namespace: srcNS},
			Spec: gatewayv1beta1.ReferenceGrantSpec{
				To: []gatewayv1beta1.ReferenceGrantTo{{Group: snapshotv1.GroupName, Kind: "VolumeSnapshot", Name: ptr.To(gatewayv1beta1.ObjectName(snapshotName))}},
			},
		}
		for _, ns := range chunk {
			g.Spec.From = append(g.Spec.From, gatewayv1beta1.ReferenceGrantFrom{Group: "", Kind: "PersistentVolumeClaim", Namespace: gatewayv1beta1.Namespace(ns)})
		}
		if _, err := c.gateway.GatewayV1beta1().ReferenceGrants(srcNS).Create(ctx, g, metav1.CreateOptions{}); err != nil {
			return names, fmt.Errorf("creating ReferenceGrant %s/%s: %w", srcNS, g.Name, err)
		}
		names = append(names, g.Name)
	}
	return names, nil
}

func (c *clients) deleteGrants(ctx context.Context, srcNS string, names []string) error {
	for _, n := range names {
		if err := c.gateway.GatewayV1beta1().ReferenceGrants(srcNS).Delete(ctx, n, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("deleting ReferenceGrant %s/%s: %w", srcNS, n, err)
		}
	}
	return nil
}

// deleteNamespaces deletes the namespaces and waits until they are gone and
// no PV of a claim in them is left: the sidecar deletes those volumes with
// its own client budget, which the next scenario must have to itself.
func (c *clients) deleteNamespaces(ctx context.Context, names []string, timeout time.Duration) error {
	for _, n := range names {
		if err := c.kube.CoreV1().Namespaces().Delete(ctx, n, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("deleting namespace %s: %w", n, err)
		}
	}
	gone := map[string]bool{}
	for _, n := range names {
		gone[n] = true
	}
	var last string
	err := wait.PollUntilContextTimeout(ctx, pollInterval, timeout, true, func(ctx context.Context) (bool, error) {
		for _, n := range names {
			if _, err := c.kube.CoreV1().Namespaces().Get(ctx, n, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
				last = "namespace " + n + " still there"
				return false, nil
			}
		}
		pvs, err := c.kube.CoreV1().PersistentVolumes().List(ctx, metav1.ListOptions{})
		if err != nil {
			last = err.Error()
			return false, nil
		}
		left := 0
		for _, pv := range pvs.Items {
			if ref := pv.Spec.ClaimRef; ref != nil && gone[ref.Namespace] {
				left++
			}
		}
		last = fmt.Sprintf("%d PVs of their claims left", left)
		return left == 0, nil
	})
	if err != nil {
		return fmt.Errorf("cleaning up %v: %s: %w", names, last, err)
	}
	return nil
}

// leftovers lists namespaces an earlier bench left behind (interrupted).
func (c *clients) leftovers(ctx context.Context) ([]string, error) {
	list, err := c.kube.CoreV1().Namespaces().List(ctx, metav1.ListOptions{LabelSelector: runLabelKey})
	if err != nil {
		return nil, fmt.Errorf("listing namespaces: %w", err)
	}
	var out []string
	for _, ns := range list.Items {
		out = append(out, ns.Name)
	}
	return out, nil
}
