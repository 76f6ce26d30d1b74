package bench

import (
	"context"
	"fmt"
	"time"

	"k8s.io/klog/v2"

	"github.com/crossns/external-provisioner/test/cluster"
)

// sidecar is the bed's csi-provisioner as the bench sees it: a process to
// restart with other flags, /proc to read and /metrics to scrape.
type sidecar struct {
	bed *cluster.Cluster
}

// restart runs the sidecar with the bed's base flags plus args, so its
// counters, CPU time and VmHWM start from zero for the configuration.
func (s *sidecar) restart(ctx context.Context, args []string) error {
	return s.bed.RestartProvisioner(ctx, args...)
}

// pids returns the PID of every running bed component.
func (s *sidecar) pids() map[string]int {
	out := map[string]int{}
	for _, st := range s.bed.Status() {
		if st.Alive {
			out[st.Name] = st.PID
		}
	}
	return out
}

// point is the state of the sidecar and the machine at one moment.
type point struct {
	at      time.Time
	metrics metrics
	// proc is the sidecar's; components holds the CPU seconds of every bed
	// component (the sidecar included).
	proc       procSample
	components map[string]float64
	machine    machineSample
}

// sample scrapes the sidecar's metrics and reads /proc.
func (s *sidecar) sample(ctx context.Context) (point, error) {
	p := point{at: time.Now(), components: map[string]float64{}}
	var err error
	if p.metrics, err = scrape(ctx, s.bed.ProvisionerMetricsURL()); err != nil {
		return p, err
	}
	pids := s.pids()
	pid, ok := pids[cluster.Provisioner]
	if !ok {
		return p, fmt.Errorf("the sidecar is not running (see %s)", s.bed.LogPath(cluster.Provisioner))
	}
	if p.proc, err = readProc(pid); err != nil {
		return p, fmt.Errorf("reading the sidecar's /proc: %w", err)
	}
	for name, pid := range pids {
		if ps, err := readProc(pid); err == nil {
			p.components[name] = ps.cpuSeconds
		}
	}
	p.machine, err = readMachine()
	return p, err
}

// settle waits until the sidecar's API request counters have not moved for
// quiet (Events go out at the events client's own rate, well after the last
// PV) and returns that moment's point. After max it returns the last point
// with settled false.
func (s *sidecar) settle(ctx context.Context, quiet, max time.Duration) (p point, settled bool, err error) {
	logger := klog.FromContext(ctx)
	deadline := time.Now().Add(max)
	last, lastChange := -1.0, time.Now()
	for {
		if p, err = s.sample(ctx); err != nil {
			return p, false, err
		}
		total := p.metrics.sum(apiRequestsMetric, nil)
		if total != last {
			last, lastChange = total, p.at
		} else if p.at.Sub(lastChange) >= quiet {
			return p, true, nil
		}
		if p.at.After(deadline) {
			logger.Info("Sidecar still sending requests; measuring anyway", "waited", max)
			return p, false, nil
		}
		select {
		case <-ctx.Done():
			return p, false, ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// RequestCount is one kind of API request the sidecar sent in a scenario.
type RequestCount struct {
	Client   string  `json:"client"`
	Verb     string  `json:"verb"`
	Resource string  `json:"resource"`
	Total    float64 `json:"total"`
	PerClaim float64 `json:"perClaim"`
}

// requestDelta is what the sidecar sent between two scrapes, per claim,
// sorted by client, resource and verb; series that did not move are left out.
func requestDelta(before, after metrics, claims int) []RequestCount {
	b, a := before.apiRequests(), after.apiRequests()
	var out []RequestCount
	for k, v := range a {
		d := v - b[k]
		if d <= 0 {
			continue
		}
		out = append(out, RequestCount{Client: k.client, Verb: k.verb, Resource: k.resource, Total: d, PerClaim: d / float64(claims)})
	}
	sortRequests(out)
	return out
}

// perClient sums per-claim requests by client (main, events).
func perClient(rs []RequestCount) map[string]float64 {
	out := map[string]float64{}
	for _, r := range rs {
		out[r.Client] += r.PerClaim
	}
	return out
}
