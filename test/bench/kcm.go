package bench

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"k8s.io/client-go/rest"

	"github.com/crossns/external-provisioner/test/cluster"
)

// controllerManager reads kube-controller-manager's /metrics: it binds every
// claim to its PV with its own client and budget, so claims bound per second
// can be limited there rather than by the sidecar.
type controllerManager struct {
	url    string
	client *http.Client
}

// newControllerManager finds the secure port in the running process's flags
// and talks to it with the bed's admin credentials (system:masters may read
// /metrics through the delegated authorization of the API server).
func newControllerManager(bed *cluster.Cluster) (*controllerManager, error) {
	var pid int
	for _, st := range bed.Status() {
		if st.Name == cluster.KubeControllerManager && st.Alive {
			pid = st.PID
		}
	}
	if pid == 0 {
		return nil, fmt.Errorf("kube-controller-manager is not running")
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return nil, err
	}
	port := 0
	for _, arg := range bytes.Split(cmdline, []byte{0}) {
		if v, ok := strings.CutPrefix(string(arg), "--secure-port="); ok {
			port, _ = strconv.Atoi(v)
		}
	}
	if port == 0 {
		return nil, fmt.Errorf("no --secure-port in kube-controller-manager's flags")
	}
	rt, err := rest.TransportFor(bed.RESTConfig())
	if err != nil {
		return nil, err
	}
	return &controllerManager{
		url:    fmt.Sprintf("https://127.0.0.1:%d/metrics", port),
		client: &http.Client{Transport: rt, Timeout: 10 * time.Second},
	}, nil
}

func (k *controllerManager) sample(ctx context.Context) (metrics, error) {
	if k == nil {
		return nil, nil
	}
	return scrapeWith(ctx, k.client, k.url)
}

// Metric names of client-go in kube-controller-manager.
const (
	clientRequestsMetric  = "rest_client_requests_total"
	clientThrottledMetric = "rest_client_rate_limiter_duration_seconds_sum"
)

// kcmDelta is kube-controller-manager's requests per claim by HTTP method,
// and the seconds its requests waited in its client-side rate limiter.
func kcmDelta(before, after metrics, claims int) (perClaim map[string]float64, throttled float64) {
	if before == nil || after == nil {
		return nil, 0
	}
	perClaim = map[string]float64{}
	for _, method := range []string{"GET", "POST", "PUT", "PATCH", "DELETE"} {
		d := after.sum(clientRequestsMetric, map[string]string{"method": method}) - before.sum(clientRequestsMetric, map[string]string{"method": method})
		if d > 0 {
			perClaim[method] = d / float64(claims)
		}
	}
	return perClaim, after.sum(clientThrottledMetric, nil) - before.sum(clientThrottledMetric, nil)
}
