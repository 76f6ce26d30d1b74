// Package bench is the load benchmark of the sidecar on the local test bed
// (test/cluster): many claims in many namespaces restoring one VolumeSnapshot
// in another namespace at once (fan-out), and claims that wait for their
// ReferenceGrant (grant latency), at the sidecar's default client limits and
// at raised ones. It measures what a cluster admin would: PVs and bound claims
// per second, latencies from a watch, the Kubernetes API requests the sidecar
// spends per claim (its own /metrics), and its CPU and peak memory (/proc).
//
// `make bench` runs it through cmd/loadbench; docs/benchmarks.md explains the
// figures and records the latest ones.
package bench

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Config says what to run. DefaultConfig holds the values `make bench` uses.
type Config struct {
	// Claims restore the snapshot at once in the fan-out, spread over Namespaces.
	Claims     int
	Namespaces int
	// GrantClaims are created before their grant, spread over GrantNamespaces
	// (one grant allows them all, so at most maxGrantFrom namespaces).
	GrantClaims     int
	GrantNamespaces int
	// SourceNamespace holds the source claim and its VolumeSnapshot.
	SourceNamespace string
	// SourceMiB of files are written into the source volume before the
	// snapshot, so every restore copies real data.
	SourceMiB int
	// Runs repeats every configuration; the summary reports medians.
	Runs int
	// Limits are the sidecar client limits to measure, in order, every run.
	Limits []Limits
	// SidecarArgs are extra sidecar flags for every configuration (the bed's
	// base flags come first).
	SidecarArgs []string
	// Timeout bounds each wait for claims to bind and for cleanup.
	Timeout time.Duration
	// DenialWait bounds how long the grant scenario waits for its claims to
	// be refused (ReferenceGrantMissing) before it creates the grant.
	DenialWait time.Duration
	// SettleQuiet is how long the sidecar's request counters must stay still
	// to count as idle (Events drain at the events client's own rate);
	// SettleMax caps that wait.
	SettleQuiet, SettleMax time.Duration
	// BuildSidecar rebuilds the sidecar from the bed's clone first, so the
	// figures are of the code in the tree.
	BuildSidecar bool
}

// DefaultConfig is the scenario: 200 claims over 20 namespaces, 50
// waiting claims, a 4 MiB source, at 5/10 (the default) and 50/100.
func DefaultConfig() Config {
	return Config{
		Claims: 200, Namespaces: 20,
		GrantClaims: 50, GrantNamespaces: 5,
		SourceNamespace: "prod",
		SourceMiB:       4,
		Runs:            1,
		Limits:          []Limits{{}, {QPS: 50, Burst: 100}},
		Timeout:         10 * time.Minute,
		DenialWait:      30 * time.Second,
		SettleQuiet:     3 * time.Second,
		SettleMax:       5 * time.Minute,
		BuildSidecar:    true,
	}
}

// maxGrantFrom is how many `from` entries one ReferenceGrant may hold (the
// CRD's maxItems).
const maxGrantFrom = 16

// Validate rejects configurations the scenarios cannot run.
func (c Config) Validate() error {
	switch {
	case c.Claims < 1 || c.Namespaces < 1:
		return fmt.Errorf("-claims and -namespaces must be positive")
	case c.Namespaces > c.Claims:
		return fmt.Errorf("-namespaces %d is more than -claims %d", c.Namespaces, c.Claims)
	case c.GrantClaims < 0 || (c.GrantClaims > 0 && c.GrantNamespaces < 1):
		return fmt.Errorf("-grant-claims must be 0 or more, with -grant-namespaces positive")
	case c.GrantNamespaces > maxGrantFrom:
		return fmt.Errorf("-grant-namespaces %d: one ReferenceGrant holds at most %d namespaces", c.GrantNamespaces, maxGrantFrom)
	case c.GrantClaims > 0 && c.GrantNamespaces > c.GrantClaims:
		return fmt.Errorf("-grant-namespaces %d is more than -grant-claims %d", c.GrantNamespaces, c.GrantClaims)
	case c.Runs < 1:
		return fmt.Errorf("-runs must be at least 1")
	case len(c.Limits) == 0:
		return fmt.Errorf("no -limits to measure")
	case c.SourceMiB < 0:
		return fmt.Errorf("-source-mib must not be negative")
	}
	return nil
}

// Limits are the sidecar's --kube-api-qps and --kube-api-burst; the zero
// value leaves both at the sidecar's defaults (5 and 10).
type Limits struct {
	QPS   float64 `json:"qps,omitempty"`
	Burst int     `json:"burst,omitempty"`
}

// Default reports whether the sidecar runs with its own defaults.
func (l Limits) Default() bool { return l.QPS == 0 && l.Burst == 0 }

// String is "default" or "qps/burst", as -limits takes them.
func (l Limits) String() string {
	if l.Default() {
		return "default"
	}
	return strconv.FormatFloat(l.QPS, 'f', -1, 64) + "/" + strconv.Itoa(l.Burst)
}

// Args are the sidecar flags for these limits.
func (l Limits) Args() []string {
	if l.Default() {
		return nil
	}
	return []string{"--kube-api-qps=" + strconv.FormatFloat(l.QPS, 'f', -1, 64), "--kube-api-burst=" + strconv.Itoa(l.Burst)}
}

// ParseLimits reads a comma-separated list of "default" and "qps/burst".
func ParseLimits(s string) ([]Limits, error) {
	var out []Limits
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		if part == "default" {
			out = append(out, Limits{})
			continue
		}
		q, b, ok := strings.Cut(part, "/")
		qps, err1 := strconv.ParseFloat(q, 64)
		burst, err2 := strconv.Atoi(b)
		if !ok || err1 != nil || err2 != nil || qps <= 0 || burst <= 0 {
			return nil, fmt.Errorf("limits %q: want \"default\" or qps/burst, e.g. 50/100", part)
		}
		out = append(out, Limits{QPS: qps, Burst: burst})
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no limits in %q", s)
	}
	return out, nil
}
