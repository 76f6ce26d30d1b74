package csidriver

import (
	"fmt"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"k8s.io/apimachinery/pkg/api/resource"
)

// Parsers for the textual forms used by command line flags and the control
// endpoint. They live in the package so that tests and main agree on them.

// ParseTopology parses "key=value[,key2=value2]" into a topology segment map.
// An empty string means "no topology".
func ParseTopology(s string) (map[string]string, error) {
	segments := map[string]string{}
	for _, kv := range splitList(s) {
		k, v, ok := strings.Cut(kv, "=")
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		if !ok || k == "" || v == "" {
			return nil, fmt.Errorf("invalid topology segment %q: want key=value", kv)
		}
		if _, dup := segments[k]; dup {
			return nil, fmt.Errorf("duplicate topology key %q", k)
		}
		segments[k] = v
	}
	return segments, nil
}

// ParseDelays parses "Method=duration[,Method2=duration]" ("*" for all
// methods), e.g. "CreateVolume=2s,*=10ms", into dst. Later entries override
// earlier ones, which makes a repeated flag behave as expected.
func ParseDelays(s string, dst map[string]time.Duration) error {
	for _, kv := range splitList(s) {
		m, ds, ok := strings.Cut(kv, "=")
		m = strings.TrimSpace(m)
		if !ok || m == "" {
			return fmt.Errorf("invalid delay %q: want Method=duration", kv)
		}
		if err := checkMethod(m); err != nil {
			return err
		}
		d, err := time.ParseDuration(strings.TrimSpace(ds))
		if err != nil {
			return fmt.Errorf("invalid delay %q: %w", kv, err)
		}
		if d < 0 {
			return fmt.Errorf("invalid delay %q: negative", kv)
		}
		dst[m] = d
	}
	return nil
}

// ParseCode parses a gRPC code name as printed by codes.Code.String, e.g.
// "ResourceExhausted".
func ParseCode(name string) (codes.Code, error) {
	for c := codes.OK; c <= codes.Unauthenticated; c++ {
		if c.String() == name {
			return c, nil
		}
	}
	return codes.Unknown, fmt.Errorf("unknown gRPC code %q", name)
}

// ParseCapacity parses a resource.Quantity such as "100Gi" into bytes.
func ParseCapacity(s string) (int64, error) {
	q, err := resource.ParseQuantity(s)
	if err != nil {
		return 0, fmt.Errorf("invalid capacity %q: %w", s, err)
	}
	if q.Sign() < 0 {
		return 0, fmt.Errorf("invalid capacity %q: negative", s)
	}
	return q.Value(), nil
}

func splitList(s string) []string {
	var out []string
	for _, item := range strings.Split(s, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}
