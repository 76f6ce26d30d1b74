package metrics

import (
	"net/http"
	"strings"
	"testing"

	"k8s.io/component-base/metrics"
	"k8s.io/component-base/metrics/testutil"
)

func TestClassify(t *testing.T) {
	tests := []struct {
		name         string
		method       string
		path         string
		watch        bool
		wantVerb     string
		wantResource string
	}{
		// Core group, namespaced.
		{name: "get a claim", method: http.MethodGet, path: "/api/v1/namespaces/dev/persistentvolumeclaims/copy", wantVerb: "get", wantResource: "persistentvolumeclaims"},
		{name: "list claims in a namespace", method: http.MethodGet, path: "/api/v1/namespaces/dev/persistentvolumeclaims", wantVerb: "list", wantResource: "persistentvolumeclaims"},
		{name: "list claims in all namespaces", method: http.MethodGet, path: "/api/v1/persistentvolumeclaims", wantVerb: "list", wantResource: "persistentvolumeclaims"},
		{name: "watch claims with ?watch", method: http.MethodGet, path: "/api/v1/persistentvolumeclaims", watch: true, wantVerb: "watch", wantResource: "persistentvolumeclaims"},
		{name: "watch claims in a namespace with ?watch", method: http.MethodGet, path: "/api/v1/namespaces/dev/persistentvolumeclaims", watch: true, wantVerb: "watch", wantResource: "persistentvolumeclaims"},
		{name: "watch claims with the /watch/ path", method: http.MethodGet, path: "/api/v1/watch/persistentvolumeclaims", wantVerb: "watch", wantResource: "persistentvolumeclaims"},
		{name: "watch one claim with the /watch/ path", method: http.MethodGet, path: "/api/v1/watch/namespaces/dev/persistentvolumeclaims/copy", wantVerb: "watch", wantResource: "persistentvolumeclaims"},
		{name: "create an event", method: http.MethodPost, path: "/api/v1/namespaces/dev/events", wantVerb: "create", wantResource: "events"},
		{name: "update a claim", method: http.MethodPut, path: "/api/v1/namespaces/dev/persistentvolumeclaims/copy", wantVerb: "update", wantResource: "persistentvolumeclaims"},
		{name: "patch a claim's finalizers", method: http.MethodPatch, path: "/api/v1/namespaces/prod/persistentvolumeclaims/db", wantVerb: "patch", wantResource: "persistentvolumeclaims"},
		{name: "update a claim's status subresource", method: http.MethodPut, path: "/api/v1/namespaces/dev/persistentvolumeclaims/copy/status", wantVerb: "update", wantResource: "persistentvolumeclaims"},
		{name: "delete a claim", method: http.MethodDelete, path: "/api/v1/namespaces/dev/persistentvolumeclaims/copy", wantVerb: "delete", wantResource: "persistentvolumeclaims"},
		// Core group, cluster-scoped.
		{name: "create a volume", method: http.MethodPost, path: "/api/v1/persistentvolumes", wantVerb: "create", wantResource: "persistentvolumes"},
		{name: "get a volume", method: http.MethodGet, path: "/api/v1/persistentvolumes/pvc-1", wantVerb: "get", wantResource: "persistentvolumes"},
		{name: "delete a volume", method: http.MethodDelete, path: "/api/v1/persistentvolumes/pvc-1", wantVerb: "delete", wantResource: "persistentvolumes"},
		{name: "get a node", method: http.MethodGet, path: "/api/v1/nodes/node-a", wantVerb: "get", wantResource: "nodes"},
		// Named groups.
		{name: "get a snapshot", method: http.MethodGet, path: "/apis/snapshot.storage.k8s.io/v1/namespaces/prod/volumesnapshots/nightly", wantVerb: "get", wantResource: "volumesnapshots"},
		{name: "patch a snapshot", method: http.MethodPatch, path: "/apis/snapshot.storage.k8s.io/v1/namespaces/prod/volumesnapshots/nightly", wantVerb: "patch", wantResource: "volumesnapshots"},
		{name: "list snapshot contents (cluster-scoped)", method: http.MethodGet, path: "/apis/snapshot.storage.k8s.io/v1/volumesnapshotcontents", wantVerb: "list", wantResource: "volumesnapshotcontents"},
		{name: "get a snapshot content", method: http.MethodGet, path: "/apis/snapshot.storage.k8s.io/v1/volumesnapshotcontents/content-1", wantVerb: "get", wantResource: "volumesnapshotcontents"},
		{name: "watch reference grants with the /watch/ path", method: http.MethodGet, path: "/apis/gateway.networking.k8s.io/v1beta1/watch/referencegrants", wantVerb: "watch", wantResource: "referencegrants"},
		{name: "watch reference grants with ?watch", method: http.MethodGet, path: "/apis/gateway.networking.k8s.io/v1beta1/referencegrants", watch: true, wantVerb: "watch", wantResource: "referencegrants"},
		{name: "update a lease", method: http.MethodPut, path: "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/hostpath-csi-k8s-io", wantVerb: "update", wantResource: "leases"},
		{name: "create a storage capacity", method: http.MethodPost, path: "/apis/storage.k8s.io/v1/namespaces/kube-system/csistoragecapacities", wantVerb: "create", wantResource: "csistoragecapacities"},
		{name: "list storage classes", method: http.MethodGet, path: "/apis/storage.k8s.io/v1/storageclasses/", wantVerb: "list", wantResource: "storageclasses"},
		// The namespaces resource itself.
		{name: "list namespaces", method: http.MethodGet, path: "/api/v1/namespaces", wantVerb: "list", wantResource: "namespaces"},
		{name: "get a namespace", method: http.MethodGet, path: "/api/v1/namespaces/dev", wantVerb: "get", wantResource: "namespaces"},
		{name: "watch namespaces", method: http.MethodGet, path: "/api/v1/watch/namespaces", wantVerb: "watch", wantResource: "namespaces"},
		{name: "watch one namespace", method: http.MethodGet, path: "/api/v1/watch/namespaces/dev", wantVerb: "watch", wantResource: "namespaces"},
		{name: "delete a namespace", method: http.MethodDelete, path: "/api/v1/namespaces/dev", wantVerb: "delete", wantResource: "namespaces"},
		{name: "finalize a namespace", method: http.MethodPut, path: "/api/v1/namespaces/dev/finalize", wantVerb: "update", wantResource: "namespaces"},
		{name: "get a namespace's status", method: http.MethodGet, path: "/api/v1/namespaces/dev/status", wantVerb: "get", wantResource: "namespaces"},
		// Not resources.
		{name: "discovery of a group version", method: http.MethodGet, path: "/apis/snapshot.storage.k8s.io/v1", wantVerb: "list", wantResource: "other"},
		{name: "discovery of groups", method: http.MethodGet, path: "/apis", wantVerb: "get", wantResource: "other"},
		{name: "version", method: http.MethodGet, path: "/version", wantVerb: "get", wantResource: "other"},
		{name: "healthz", method: http.MethodGet, path: "/healthz", wantVerb: "get", wantResource: "other"},
		{name: "unusual method", method: http.MethodHead, path: "/api/v1/nodes", wantVerb: "head", wantResource: "nodes"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			verb, resource := Classify(tc.method, tc.path, tc.watch)
			if verb != tc.wantVerb || resource != tc.wantResource {
				t.Errorf("Classify(%s, %q, %v) = %s, %s; want %s, %s", tc.method, tc.path, tc.watch, verb, resource, tc.wantVerb, tc.wantResource)
			}
		})
	}
}

// TestWrap sends requests as client-go builds them through a wrapped
// transport and reads the counter off the registry, as /metrics would show it.
func TestWrap(t *testing.T) {
	type request struct{ method, url string }
	tests := []struct {
		name     string
		client   string
		requests []request
		want     string
	}{
		{
			name:   "informer list then watch",
			client: "main",
			requests: []request{
				{http.MethodGet, "https://apiserver/api/v1/persistentvolumeclaims?limit=500&resourceVersion=0"},
				{http.MethodGet, "https://apiserver/api/v1/persistentvolumeclaims?allowWatchBookmarks=true&resourceVersion=12&timeoutSeconds=300&watch=true"},
				{http.MethodGet, "https://apiserver/api/v1/persistentvolumeclaims?watch=false"},
			},
			want: `
csi_provisioner_kube_api_requests_total{client="main",resource="persistentvolumeclaims",verb="list"} 2
csi_provisioner_kube_api_requests_total{client="main",resource="persistentvolumeclaims",verb="watch"} 1
`,
		},
		{
			name:   "events on their own client",
			client: "events",
			requests: []request{
				{http.MethodPost, "https://apiserver/api/v1/namespaces/dev/events"},
				{http.MethodPatch, "https://apiserver/api/v1/namespaces/dev/events/copy.17a"},
			},
			want: `
csi_provisioner_kube_api_requests_total{client="events",resource="events",verb="create"} 1
csi_provisioner_kube_api_requests_total{client="events",resource="events",verb="patch"} 1
`,
		},
		{
			name:   "storage capacity on its own client",
			client: ClientCapacity,
			requests: []request{
				{http.MethodPost, "https://apiserver/apis/storage.k8s.io/v1/namespaces/kube-system/csistoragecapacities"},
				{http.MethodPut, "https://apiserver/apis/storage.k8s.io/v1/namespaces/kube-system/csistoragecapacities/csisc-x1"},
			},
			want: `
csi_provisioner_kube_api_requests_total{client="capacity",resource="csistoragecapacities",verb="create"} 1
csi_provisioner_kube_api_requests_total{client="capacity",resource="csistoragecapacities",verb="update"} 1
`,
		},
		{
			name:   "the Lease on the leader election client",
			client: ClientLeaderElection,
			requests: []request{
				{http.MethodGet, "https://apiserver/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/file-csi-crossns-io"},
				{http.MethodPut, "https://apiserver/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/file-csi-crossns-io"},
				{http.MethodPut, "https://apiserver/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/file-csi-crossns-io"},
			},
			want: `
csi_provisioner_kube_api_requests_total{client="leader-election",resource="leases",verb="get"} 1
csi_provisioner_kube_api_requests_total{client="leader-election",resource="leases",verb="update"} 2
`,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			reg := metrics.NewKubeRegistry()
			m := NewAPIRequests(reg)
			sent := 0
			rt := m.Wrap(tc.client)(roundTripper(func(*http.Request) (*http.Response, error) {
				sent++
				return &http.Response{StatusCode: http.StatusOK, Body: http.NoBody}, nil
			}))
			for _, r := range tc.requests {
				req, err := http.NewRequest(r.method, r.url, nil)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := rt.RoundTrip(req); err != nil {
					t.Fatalf("RoundTrip() error = %v", err)
				}
			}
			if sent != len(tc.requests) {
				t.Errorf("requests passed on = %d, want %d", sent, len(tc.requests))
			}
			// The help names every client label value main uses.
			want := "# HELP csi_provisioner_kube_api_requests_total [ALPHA] Requests sent to kube-apiserver, by client (main, events, capacity, leader-election), verb (get, list, watch, create, update, patch, delete) and resource.\n" +
				"# TYPE csi_provisioner_kube_api_requests_total counter" + tc.want
			if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "csi_provisioner_kube_api_requests_total"); err != nil {
				t.Error(err)
			}
		})
	}
}
