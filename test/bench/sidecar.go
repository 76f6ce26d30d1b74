package bench

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"time"

	"github.com/crossns/external-provisioner/test/cluster"
)

// sidecar is the bed's csi-provisioner as the bench sees it: a process to
// restart with other flags, /proc to read and /metrics to scrape.
type sidecar struct {
	bed *cluster.Cluster
}

// restart runs the sidecar with the bed's base flags plus args, so its
// counters, CPU time and VmHWM start from zero for the configuration.
//
// The old process is stopped first and waited for until it is gone: the
// bed's stop can return while a large process is still exiting (its
// /proc/<pid>/cmdline reads empty once its memory is released, which the
// bed takes for "exited", but its listener is not closed yet), and the start
// that follows then finds the metrics port in use.
func (s *sidecar) restart(ctx context.Context, args []string) error {
	old := s.pids()[cluster.Provisioner]
	if err := s.bed.StopProvisioner(ctx); err != nil {
		return err
	}
	if old > 0 {
		if err := waitGone(ctx, old, 30*time.Second); err != nil {
			return err
		}
	}
	return s.bed.RestartProvisioner(ctx, args...)
}

// waitGone waits until pid has exited (no /proc entry, or a zombie).
func waitGone(ctx context.Context, pid int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return nil
		}
		if i := bytes.LastIndexByte(stat, ')'); i > 0 && i+2 < len(stat) && (stat[i+2] == 'Z' || stat[i+2] == 'X') {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the old sidecar (pid %d) still runs %s after it was stopped", pid, timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
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
