package bench

import (
	"context"
	"fmt"
	"runtime"
	"strconv"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/klog/v2"

	"github.com/crossns/external-provisioner/test/cluster"
)

// bench is one invocation: its configuration, the bed and its clients.
type bench struct {
	cfg Config
	bed *cluster.Cluster
	c   *clients
	sc  *sidecar
	// kcm is nil when kube-controller-manager's metrics cannot be read.
	kcm *controllerManager
	// run labels everything this invocation creates.
	run string
}

// RunResult is one configuration measured once.
type RunResult struct {
	Run         int          `json:"run"`
	Limits      Limits       `json:"limits"`
	SidecarArgs []string     `json:"sidecarArgs"`
	Started     string       `json:"started"`
	Fanout      FanoutResult `json:"fanout"`
	Grant       *GrantResult `json:"grant,omitempty"`
	// PeakRSSMiB is the sidecar's VmHWM at the end: the peak of a process
	// started for this configuration. StartRSSMiB is VmRSS once the source
	// was provisioned, before the fan-out.
	PeakRSSMiB  float64 `json:"peakRSSMiB"`
	StartRSSMiB float64 `json:"startRSSMiB"`
	Error       string  `json:"error,omitempty"`
}

// Run measures every configuration cfg.Runs times, interleaved (default,
// raised, default, ...) so that noise on a shared machine falls on both, and
// restores the sidecar's default flags at the end. It returns what it
// measured even when a run fails.
func Run(ctx context.Context, bed *cluster.Cluster, cfg Config) (*Report, error) {
	logger := klog.FromContext(ctx)
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	c, err := newClients(bed.RESTConfig())
	if err != nil {
		return nil, err
	}
	b := &bench{cfg: cfg, bed: bed, c: c, sc: &sidecar{bed: bed}, run: strconv.FormatInt(time.Now().Unix(), 10)}
	rep := &Report{Started: time.Now().UTC().Format(time.RFC3339), Machine: describeMachine(runtime.NumCPU()), Config: cfg, Baseline: Upstream}

	if b.kcm, err = newControllerManager(bed); err != nil {
		logger.Error(err, "kube-controller-manager's metrics are not readable; its figures are left out")
	}
	if err := b.removeLeftovers(ctx); err != nil {
		return rep, err
	}
	if cfg.BuildSidecar {
		logger.Info("Building the sidecar from the bed's clone")
		if err := bed.BuildProvisioner(ctx); err != nil {
			return rep, err
		}
	}
	defer func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
		defer cancel()
		if err := b.sc.restart(rctx, nil); err != nil {
			logger.Error(err, "Restoring the sidecar's default flags")
		} else {
			logger.Info("Sidecar restored to the bed's default flags")
		}
	}()
	for run := 1; run <= cfg.Runs; run++ {
		for _, lim := range cfg.Limits {
			r, err := b.runOnce(ctx, run, lim)
			rep.Runs = append(rep.Runs, r)
			if err != nil {
				rep.Summary = summarize(rep.Runs, cfg.Limits)
				return rep, fmt.Errorf("run %d at limits %s: %w", run, lim, err)
			}
		}
	}
	rep.Summary = summarize(rep.Runs, cfg.Limits)
	return rep, nil
}

// runOnce restarts the sidecar with the limits and runs both scenarios.
func (b *bench) runOnce(ctx context.Context, run int, lim Limits) (r RunResult, err error) {
	logger := klog.FromContext(ctx).WithValues("run", run, "limits", lim.String())
	ctx = klog.NewContext(ctx, logger)
	args := append(append([]string{}, b.cfg.SidecarArgs...), lim.Args()...)
	r = RunResult{Run: run, Limits: lim, SidecarArgs: b.bed.ProvisionerArgs(args...), Started: time.Now().UTC().Format(time.RFC3339)}
	defer func() {
		if err != nil {
			r.Error = err.Error()
		}
	}()
	logger.Info("Restarting the sidecar", "extraArgs", args)
	if err := b.sc.restart(ctx, args); err != nil {
		return r, err
	}
	src, err := b.makeSource(ctx)
	if err != nil {
		return r, err
	}
	defer b.cleanup(ctx, "source", []string{src.namespace}, src.namespace, nil)
	if p, err := b.sc.sample(ctx); err == nil {
		r.StartRSSMiB = kib2mib(p.proc.rssKiB)
	}

	if r.Fanout, err = b.fanout(ctx, src); err != nil {
		return r, err
	}
	logger.Info("Fan-out done", "pvsPerSecond", round2(r.Fanout.PVsPerSecond), "createToPVp50", round2(r.Fanout.CreateToPV.P50),
		"mainRequestsPerClaim", round2(r.Fanout.RequestsPerClaim["main"]), "eventsPerClaim", round2(r.Fanout.RequestsPerClaim["events"]))
	if b.cfg.GrantClaims > 0 {
		g, err := b.grantLatency(ctx, src)
		r.Grant = &g
		if err != nil {
			return r, err
		}
		logger.Info("Grant latency done", "grantToPVp50", round2(g.GrantToPV.P50), "grantToPVp99", round2(g.GrantToPV.P99))
	}
	p, err := b.sc.sample(ctx)
	if err != nil {
		return r, err
	}
	r.PeakRSSMiB = kib2mib(p.proc.hwmKiB)
	return r, nil
}

// removeLeftovers deletes what an interrupted bench left on the bed, and
// refuses to touch a source namespace the bench did not make.
func (b *bench) removeLeftovers(ctx context.Context) error {
	left, err := b.c.leftovers(ctx)
	if err != nil {
		return err
	}
	if len(left) > 0 {
		klog.FromContext(ctx).Info("Removing namespaces an earlier bench left behind", "namespaces", left)
		if err := b.c.deleteNamespaces(ctx, left, b.cfg.Timeout); err != nil {
			return err
		}
	}
	if _, err := b.c.kube.CoreV1().Namespaces().Get(ctx, b.cfg.SourceNamespace, metav1.GetOptions{}); err == nil {
		return fmt.Errorf("namespace %s exists and is not the bench's: delete it or pass -source-namespace", b.cfg.SourceNamespace)
	}
	return nil
}

// settle waits until neither the sidecar nor kube-controller-manager has
// sent an API request for SettleQuiet, and returns the sidecar's point of
// that moment: the sidecar's Events drain at the events client's rate well
// after the last PV, and kube-controller-manager works off its own backlog
// (binding, releasing) at its own rate. After SettleMax it returns the last
// point with settled false.
func (b *bench) settle(ctx context.Context) (p point, settled bool, err error) {
	logger := klog.FromContext(ctx)
	deadline := time.Now().Add(b.cfg.SettleMax)
	last, lastChange := -1.0, time.Now()
	for {
		if p, err = b.sc.sample(ctx); err != nil {
			return p, false, err
		}
		total := p.metrics.sum(apiRequestsMetric, nil)
		if km, err := b.kcm.sample(ctx); err == nil {
			total += km.sum(clientRequestsMetric, nil)
		}
		if total != last {
			last, lastChange = total, p.at
		} else if p.at.Sub(lastChange) >= b.cfg.SettleQuiet {
			return p, true, nil
		}
		if p.at.After(deadline) {
			logger.Info("Still sending requests; measuring anyway", "waited", b.cfg.SettleMax)
			return p, false, nil
		}
		select {
		case <-ctx.Done():
			return p, false, ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func kib2mib(k int64) float64 { return float64(k) / 1024 }

func round2(f float64) float64 { return float64(int64(f*100+0.5)) / 100 }
