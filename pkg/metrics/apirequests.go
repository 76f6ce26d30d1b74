package metrics

import (
	"net/http"
	"strings"

	"k8s.io/component-base/metrics"
)

// The sidecar's Kubernetes clients, the values of the "client" label. Each
// has a rate limit of its own, so one busy client never delays another's
// requests.
const (
	// ClientMain reads and writes claims, volumes, sources and finalizers.
	ClientMain = "main"
	// ClientEvents sends Events.
	ClientEvents = "events"
	// ClientCapacity writes CSIStorageCapacity objects (--enable-capacity).
	ClientCapacity = "capacity"
	// ClientLeaderElection takes and renews the Lease (--leader-election).
	ClientLeaderElection = "leader-election"
)

// Clients lists every client label value, in the order of the help text.
var Clients = []string{ClientMain, ClientEvents, ClientCapacity, ClientLeaderElection}

// APIRequests counts the sidecar's requests to kube-apiserver by client
// (Clients), verb and resource, so the cost of provisioning one claim can be
// read off /metrics.
type APIRequests struct {
	total *metrics.CounterVec
}

// NewAPIRequests creates and registers the counter.
func NewAPIRequests(reg metrics.KubeRegistry) *APIRequests {
	m := &APIRequests{total: metrics.NewCounterVec(&metrics.CounterOpts{
		Subsystem: subsystem, Name: "kube_api_requests_total", StabilityLevel: metrics.ALPHA,
		Help: "Requests sent to kube-apiserver, by client (" + strings.Join(Clients, ", ") +
			"), verb (get, list, watch, create, update, patch, delete) and resource.",
	}, []string{"client", "verb", "resource"})}
	reg.MustRegister(m.total)
	return m
}

// Wrap returns a rest.Config WrapTransport function counting requests of one
// client, one of Clients.
func (m *APIRequests) Wrap(client string) func(http.RoundTripper) http.RoundTripper {
	return func(rt http.RoundTripper) http.RoundTripper {
		return roundTripper(func(req *http.Request) (*http.Response, error) {
			verb, resource := Classify(req.Method, req.URL.Path, req.URL.Query().Get("watch") == "true")
			m.total.WithLabelValues(client, verb, resource).Inc()
			return rt.RoundTrip(req)
		})
	}
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// Classify maps an API request to a Kubernetes verb and resource, e.g.
// GET /apis/snapshot.storage.k8s.io/v1/namespaces/prod/volumesnapshots/a → get, volumesnapshots.
func Classify(method, path string, watch bool) (verb, resource string) {
	parts := strings.Split(strings.Trim(path, "/"), "/")
	// Skip /api/v1 or /apis/<group>/<version>.
	switch {
	case len(parts) >= 2 && parts[0] == "api":
		parts = parts[2:]
	case len(parts) >= 3 && parts[0] == "apis":
		parts = parts[3:]
	default:
		return strings.ToLower(method), "other"
	}
	if len(parts) >= 1 && parts[0] == "watch" {
		watch, parts = true, parts[1:]
	}
	named := false
	switch {
	case len(parts) == 3 && parts[0] == "namespaces" && (parts[2] == "status" || parts[2] == "finalize"):
		// A subresource of the namespace itself, not a resource in it.
		resource, named = "namespaces", true
	case len(parts) >= 3 && parts[0] == "namespaces":
		resource, named = parts[2], len(parts) >= 4
	case len(parts) == 2 && parts[0] == "namespaces":
		resource, named = "namespaces", true
	case len(parts) >= 1:
		resource, named = parts[0], len(parts) >= 2
	default:
		resource = "other"
	}
	switch method {
	case http.MethodGet:
		switch {
		case watch:
			verb = "watch"
		case named:
			verb = "get"
		default:
			verb = "list"
		}
	case http.MethodPost:
		verb = "create"
	case http.MethodPut:
		verb = "update"
	case http.MethodPatch:
		verb = "patch"
	case http.MethodDelete:
		verb = "delete"
	default:
		verb = strings.ToLower(method)
	}
	return verb, resource
}
