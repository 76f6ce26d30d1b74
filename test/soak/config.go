package soak

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// Config says what one soak run does. The plan (workload and faults) is drawn
// from Seed alone, so a run is repeated by passing the same Config.
type Config struct {
	// Seed draws the plan; 0 picks one from the clock (and prints it).
	Seed uint64
	// Claims is how many claims the workload creates in all, the source
	// claims of the namespaces included (canaries not).
	Claims int
	// Namespaces is how many namespaces the workload spreads over; each
	// holds a source claim with files and a VolumeSnapshot of it.
	Namespaces int
	// Faults is how many faults are injected, one after the other, while
	// the workload runs; each kind of Kinds comes at least MinPerKind
	// times (as far as Faults allows), the rest are drawn at random.
	Faults     int
	MinPerKind int
	// Kinds are the fault kinds to draw from (AllKinds by default).
	Kinds []string
	// Gap is the range of pauses before each fault; OffsetMax bounds the
	// pause between releasing a fault's batch and injecting it.
	GapMin, GapMax time.Duration
	OffsetMax      time.Duration
	// MaxErrors bounds how many calls a driver-error fault fails (each
	// failure backs the sidecar's retry off further); DelayHoldMax how long
	// a delay fault lasts.
	MaxErrors    int
	DelayHoldMax time.Duration
	// SidecarTimeout is the sidecar's --timeout; delay faults outlast it.
	SidecarTimeout time.Duration
	// SidecarArgs are extra flags for both sidecar replicas, after the
	// soak's own (--leader-election, --timeout).
	SidecarArgs []string
	// OpTimeout bounds each wait of a workload step (a source to bind, a
	// snapshot to be ready); ProbeTimeout a recovery probe; SettleTimeout
	// the wait for the bed to settle at the end; CleanupTimeout the removal
	// of everything the run made.
	OpTimeout, ProbeTimeout, SettleTimeout, CleanupTimeout time.Duration
	// MaxRSSMiB is the bound the sidecar's resident memory must stay under.
	MaxRSSMiB float64
	// Keep leaves the run's namespaces on the bed (for a look) instead of
	// deleting them and checking that nothing is left.
	Keep bool
}

// Fault kinds.
const (
	// FaultSidecarKill: kill -9 both sidecar replicas, start them again.
	FaultSidecarKill = "sidecar-kill"
	// FaultLeaderKill: kill -9 the replica that leads; the other takes
	// over, the killed one comes back as standby.
	FaultLeaderKill = "leader-kill"
	// FaultDriverRestart: kill -9 the CSI driver and start it again; the
	// sidecars and csi-snapshotter exit on the lost connection and are
	// started again, as a kubelet would.
	FaultDriverRestart = "driver-restart"
	// FaultAPIServerRestart: kill -9 kube-apiserver, start it again; etcd
	// stays.
	FaultAPIServerRestart = "apiserver-restart"
	// FaultSnapshotControllerRestart: kill -9 snapshot-controller, start
	// it again.
	FaultSnapshotControllerRestart = "snapshot-controller-restart"
	// FaultDelay: calls of one driver method take longer than the
	// sidecar's --timeout, mostly running on after the caller gave up.
	FaultDelay = "delay"
)

// errorCodes are the gRPC codes of the driver-error faults, one kind each
// ("error-<Code>").
var errorCodes = []string{"Unavailable", "DeadlineExceeded", "ResourceExhausted", "Internal", "Aborted"}

// ErrorFault is the kind of the driver-error fault with code.
func ErrorFault(code string) string { return "error-" + code }

// AllKinds lists every fault kind.
func AllKinds() []string {
	kinds := []string{FaultSidecarKill, FaultLeaderKill, FaultDriverRestart, FaultAPIServerRestart, FaultSnapshotControllerRestart}
	for _, c := range errorCodes {
		kinds = append(kinds, ErrorFault(c))
	}
	return append(kinds, FaultDelay)
}

// ShortConfig is the run of `make test`: 100 claims over 10 namespaces,
// every fault kind once.
func ShortConfig() Config {
	c := LongConfig()
	c.Claims, c.Namespaces = 100, 10
	c.Faults, c.MinPerKind = len(AllKinds()), 1
	c.GapMin, c.GapMax, c.OffsetMax = 500*time.Millisecond, 1500*time.Millisecond, time.Second
	c.MaxErrors, c.DelayHoldMax = 3, 15*time.Second
	c.SettleTimeout = 5 * time.Minute
	return c
}

// LongConfig is `make soak`: 1,000 claims over 50 namespaces, 44 faults
// (every kind at least three times).
func LongConfig() Config {
	return Config{
		Claims: 1000, Namespaces: 50,
		Faults: 44, MinPerKind: 3,
		Kinds:          AllKinds(),
		GapMin:         3 * time.Second,
		GapMax:         10 * time.Second,
		OffsetMax:      2 * time.Second,
		MaxErrors:      5,
		DelayHoldMax:   25 * time.Second,
		SidecarTimeout: 10 * time.Second,
		OpTimeout:      5 * time.Minute,
		ProbeTimeout:   3 * time.Minute,
		SettleTimeout:  10 * time.Minute,
		CleanupTimeout: 10 * time.Minute,
		MaxRSSMiB:      256,
	}
}

// Validate rejects configurations the plan cannot be drawn for.
func (c Config) Validate() error {
	switch {
	case c.Namespaces < 2:
		return fmt.Errorf("-namespaces must be at least 2 (cross-namespace claims need two)")
	case c.Claims < c.Namespaces+1:
		return fmt.Errorf("-claims %d: need more than one per namespace (%d sources)", c.Claims, c.Namespaces)
	case c.Faults < 0 || c.MinPerKind < 0:
		return fmt.Errorf("-faults and the minimum per kind must not be negative")
	case len(c.Kinds) == 0 && c.Faults > 0:
		return fmt.Errorf("no fault kinds to draw from")
	case c.GapMin < 0 || c.GapMax < c.GapMin:
		return fmt.Errorf("fault gap %s..%s is not a range", c.GapMin, c.GapMax)
	case c.SidecarTimeout <= 0:
		return fmt.Errorf("-sidecar-timeout must be positive")
	case c.MaxErrors < 1 || c.DelayHoldMax < 10*time.Second || c.OffsetMax < 0:
		return fmt.Errorf("driver-error faults fail at least one call, delay faults last at least 10s")
	}
	all := AllKinds()
	for _, k := range c.Kinds {
		if !slices.Contains(all, k) {
			return fmt.Errorf("unknown fault kind %q (known: %s)", k, strings.Join(all, ", "))
		}
	}
	return nil
}

// ParseKinds reads a comma-separated list of fault kinds; "all" is AllKinds.
func ParseKinds(s string) ([]string, error) {
	if s == "" || s == "all" {
		return AllKinds(), nil
	}
	var out []string
	all := AllKinds()
	for _, k := range strings.Split(s, ",") {
		k = strings.TrimSpace(k)
		if !slices.Contains(all, k) {
			return nil, fmt.Errorf("unknown fault kind %q (known: %s)", k, strings.Join(all, ", "))
		}
		out = append(out, k)
	}
	return out, nil
}
