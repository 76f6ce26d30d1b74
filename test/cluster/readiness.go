package cluster

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	csi "github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"
)

// Readiness timeouts. kube-apiserver is the slow one: it installs its
// bootstrap RBAC policy and priority levels before /readyz turns green.
const (
	pollInterval       = 250 * time.Millisecond
	componentReadyWait = 2 * time.Minute
)

// probe is one readiness check: done when ready, an error only when waiting
// longer cannot help.
type probe func(ctx context.Context) (ready bool, detail string)

// waitReady polls check until it passes, failing early with the tail of the
// component's log when the process dies meanwhile.
func (c *Cluster) waitReady(ctx context.Context, component string, ch *child, check probe) error {
	logger := klog.FromContext(ctx)
	start := time.Now()
	last := ""
	err := wait.PollUntilContextTimeout(ctx, pollInterval, componentReadyWait, true, func(ctx context.Context) (bool, error) {
		if !ch.running() {
			return false, fmt.Errorf("%s exited while starting; last lines of %s:\n%s",
				component, c.layout.LogPath(component), tailFile(c.layout.LogPath(component), 20))
		}
		ready, detail := check(ctx)
		last = detail
		return ready, nil
	})
	if err != nil {
		if last != "" {
			return fmt.Errorf("waiting for %s to be ready (last check: %s; log %s): %w", component, last, c.layout.LogPath(component), err)
		}
		return fmt.Errorf("waiting for %s to be ready (log %s): %w", component, c.layout.LogPath(component), err)
	}
	logger.Info("Component ready", "component", component, "pid", ch.pid, "duration", time.Since(start).Round(10*time.Millisecond))
	return nil
}

// etcdHealthy checks etcd's /health endpoint.
func etcdHealthy(url string) probe {
	return func(ctx context.Context) (bool, string) {
		body, code, err := httpGet(ctx, http.DefaultClient, url+"/health")
		if err != nil {
			return false, err.Error()
		}
		var h struct {
			Health string `json:"health"`
		}
		if code != http.StatusOK || json.Unmarshal(body, &h) != nil || h.Health != "true" {
			return false, fmt.Sprintf("/health answered %d: %s", code, body)
		}
		return true, ""
	}
}

// apiServerReady checks kube-apiserver's /readyz as the admin.
func apiServerReady(client kubernetes.Interface) probe {
	return func(ctx context.Context) (bool, string) {
		body, err := client.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		if err != nil {
			return false, fmt.Sprintf("/readyz: %v %s", err, body)
		}
		return true, ""
	}
}

// httpsHealthy checks an HTTPS health endpoint served with a certificate of
// the bed's CA (kube-controller-manager's /healthz on its secure port).
func httpsHealthy(url string, caPEM []byte) probe {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	return func(ctx context.Context) (bool, string) {
		body, code, err := httpGet(ctx, client, url)
		if err != nil {
			return false, err.Error()
		}
		if code != http.StatusOK {
			return false, fmt.Sprintf("%s answered %d: %s", url, code, body)
		}
		return true, ""
	}
}

// httpOK checks that a plain HTTP endpoint answers 200 (the sidecar's /metrics).
func httpOK(url string) probe {
	return func(ctx context.Context) (bool, string) {
		_, code, err := httpGet(ctx, http.DefaultClient, url)
		if err != nil {
			return false, err.Error()
		}
		if code != http.StatusOK {
			return false, fmt.Sprintf("%s answered %d", url, code)
		}
		return true, ""
	}
}

// logShowsFrom checks that a component's log holds, past offset, a line
// marking it started, for the snapshot components that run without leader
// election and so have no lease to look at. The offset skips what an earlier
// process of the component wrote.
func logShowsFrom(path string, offset int64, marker string) probe {
	return func(context.Context) (bool, string) {
		data, err := os.ReadFile(path)
		if err != nil {
			return false, err.Error()
		}
		if int64(len(data)) < offset {
			offset = 0 // the log was replaced
		}
		if !strings.Contains(string(data[offset:]), marker) {
			return false, fmt.Sprintf("no %q in %s yet", marker, path)
		}
		return true, ""
	}
}

// csiProbe calls the driver's Identity Probe and GetPluginInfo over its socket.
func csiProbe(socket, wantDriver string) probe {
	return func(ctx context.Context) (bool, string) {
		if _, err := os.Stat(socket); err != nil {
			return false, fmt.Sprintf("no socket %s yet", socket)
		}
		conn, err := DialCSI(socket)
		if err != nil {
			return false, err.Error()
		}
		defer conn.Close()
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		id := csi.NewIdentityClient(conn)
		resp, err := id.Probe(ctx, &csi.ProbeRequest{})
		if err != nil {
			return false, fmt.Sprintf("Probe: %v", err)
		}
		if r := resp.GetReady(); r != nil && !r.GetValue() {
			return false, "Probe answered not ready"
		}
		info, err := id.GetPluginInfo(ctx, &csi.GetPluginInfoRequest{})
		if err != nil {
			return false, fmt.Sprintf("GetPluginInfo: %v", err)
		}
		if info.GetName() != wantDriver {
			return false, fmt.Sprintf("driver calls itself %q, want %q", info.GetName(), wantDriver)
		}
		return true, ""
	}
}

// DialCSI opens a gRPC client connection to a CSI unix socket (an absolute
// path, with or without the unix:// scheme). The connection is lazy: errors
// show on the first call.
func DialCSI(socket string) (*grpc.ClientConn, error) {
	path := strings.TrimPrefix(socket, "unix://")
	conn, err := grpc.NewClient("unix://"+path, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("dialing CSI socket %s: %w", path, err)
	}
	return conn, nil
}

func httpGet(ctx context.Context, client *http.Client, url string) ([]byte, int, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, 0, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	return body, resp.StatusCode, err
}

// portFree reports whether a loopback TCP port can be listened on.
func portFree(port int) bool {
	l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		return false
	}
	l.Close()
	return true
}
