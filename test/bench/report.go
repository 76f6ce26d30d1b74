package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
)

// Report is what a bench invocation writes to _output/bench/<timestamp>.json.
type Report struct {
	Started  string      `json:"started"`
	Machine  Machine     `json:"machine"`
	Config   Config      `json:"config"`
	Baseline Baseline    `json:"baseline"`
	Runs     []RunResult `json:"runs"`
	// Summary holds, per limits, the medians of the runs that succeeded.
	Summary []Summary `json:"summary"`
}

// Baseline is the upstream sidecar's figures the issue compares against.
type Baseline struct {
	Version          string  `json:"version"`
	Limits           Limits  `json:"limits"`
	Claims           int     `json:"claims"`
	Namespaces       int     `json:"namespaces"`
	ClaimsPerSecond  float64 `json:"claimsPerSecond"`
	CreateToBoundP50 float64 `json:"createToBoundP50"`
	CreateToBoundP95 float64 `json:"createToBoundP95"`
	RequestsPerClaim float64 `json:"requestsPerClaim"`
	GrantWaitMin     float64 `json:"grantWaitMin"`
	GrantWaitMax     float64 `json:"grantWaitMax"`
}

// Upstream is external-provisioner v6.3.0 at its default 5 QPS / burst 10:
// 100 claims in 20 namespaces restoring one snapshot cross-namespace.
var Upstream = Baseline{
	Version: "v6.3.0", Limits: Limits{QPS: 5, Burst: 10}, Claims: 100, Namespaces: 20,
	ClaimsPerSecond: 1.64, CreateToBoundP50: 49, CreateToBoundP95: 59, RequestsPerClaim: 6,
	GrantWaitMin: 62, GrantWaitMax: 66,
}

// Summary is the median, over successful runs, of each figure at one limits.
type Summary struct {
	Limits Limits `json:"limits"`
	Runs   int    `json:"runs"`

	PVsPerSecond   float64 `json:"pvsPerSecond"`
	BoundPerSecond float64 `json:"boundPerSecond"`
	// PVsVsUpstream is PVsPerSecond over upstream's claims per second.
	PVsVsUpstream   float64     `json:"pvsVsUpstream"`
	BoundVsUpstream float64     `json:"boundVsUpstream"`
	CreateToPV      Percentiles `json:"createToPV"`
	CreateToBound   Percentiles `json:"createToBound"`
	GrantToPV       Percentiles `json:"grantToPV"`
	GrantToBound    Percentiles `json:"grantToBound"`

	RequestsPerClaim map[string]float64 `json:"requestsPerClaim"`
	Requests         []RequestCount     `json:"requests"`
	FailedAttempts   float64            `json:"failedAttempts"`

	CPUMsPerClaim float64 `json:"cpuMsPerClaim"`
	SidecarCores  float64 `json:"sidecarCores"`
	MachineBusy   float64 `json:"machineBusy"`
	PeakRSSMiB    float64 `json:"peakRSSMiB"`

	KCMRequestsPerClaim float64        `json:"kcmRequestsPerClaim"`
	KCMThrottledSeconds float64        `json:"kcmThrottledSeconds"`
	DeleteSeconds       float64        `json:"deleteSeconds"`
	DeleteRequests      []RequestCount `json:"deleteRequests"`
	// GrantRequests are the sidecar's requests per waiting claim from the
	// grant until the last one was bound.
	GrantRequests []RequestCount `json:"grantRequests"`
}

// summarize takes, for every limits, the median of each figure over the
// runs without error. Percentiles are medians field by field.
func summarize(runs []RunResult, limits []Limits) []Summary {
	var out []Summary
	for _, lim := range limits {
		var ok []RunResult
		for _, r := range runs {
			if r.Limits == lim && r.Error == "" {
				ok = append(ok, r)
			}
		}
		if len(ok) == 0 {
			continue
		}
		med := func(f func(RunResult) float64) float64 {
			xs := make([]float64, len(ok))
			for i, r := range ok {
				xs[i] = f(r)
			}
			return median(xs)
		}
		medP := func(f func(RunResult) Percentiles) Percentiles {
			return Percentiles{
				N:   int(med(func(r RunResult) float64 { return float64(f(r).N) })),
				Min: med(func(r RunResult) float64 { return f(r).Min }),
				P50: med(func(r RunResult) float64 { return f(r).P50 }),
				P95: med(func(r RunResult) float64 { return f(r).P95 }),
				P99: med(func(r RunResult) float64 { return f(r).P99 }),
				Max: med(func(r RunResult) float64 { return f(r).Max }),
			}
		}
		grant := func(f func(GrantResult) Percentiles) func(RunResult) Percentiles {
			return func(r RunResult) Percentiles {
				if r.Grant == nil {
					return Percentiles{}
				}
				return f(*r.Grant)
			}
		}
		s := Summary{
			Limits: lim, Runs: len(ok),
			PVsPerSecond:   med(func(r RunResult) float64 { return r.Fanout.PVsPerSecond }),
			BoundPerSecond: med(func(r RunResult) float64 { return r.Fanout.BoundPerSecond }),
			CreateToPV:     medP(func(r RunResult) Percentiles { return r.Fanout.CreateToPV }),
			CreateToBound:  medP(func(r RunResult) Percentiles { return r.Fanout.CreateToBound }),
			GrantToPV:      medP(grant(func(g GrantResult) Percentiles { return g.GrantToPV })),
			GrantToBound:   medP(grant(func(g GrantResult) Percentiles { return g.GrantToBound })),
			FailedAttempts: med(func(r RunResult) float64 { return r.Fanout.FailedAttempts }),
			CPUMsPerClaim:  med(func(r RunResult) float64 { return r.Fanout.CPUMsPerClaim }),
			SidecarCores:   med(func(r RunResult) float64 { return r.Fanout.SidecarCores }),
			MachineBusy:    med(func(r RunResult) float64 { return r.Fanout.MachineBusy }),
			PeakRSSMiB:     med(func(r RunResult) float64 { return r.PeakRSSMiB }),
		}
		s.PVsVsUpstream = s.PVsPerSecond / Upstream.ClaimsPerSecond
		s.BoundVsUpstream = s.BoundPerSecond / Upstream.ClaimsPerSecond
		s.KCMRequestsPerClaim = med(func(r RunResult) float64 {
			var n float64
			for _, v := range r.Fanout.KCMRequestsPerClaim {
				n += v
			}
			return n
		})
		s.KCMThrottledSeconds = med(func(r RunResult) float64 { return r.Fanout.KCMThrottledSeconds })
		s.DeleteSeconds = med(func(r RunResult) float64 { return r.Fanout.DeleteSeconds })
		s.Requests = medianRequests(ok, func(r RunResult) []RequestCount { return r.Fanout.Requests })
		s.RequestsPerClaim = perClient(s.Requests)
		s.DeleteRequests = medianRequests(ok, func(r RunResult) []RequestCount { return r.Fanout.DeleteRequests })
		s.GrantRequests = medianRequests(ok, func(r RunResult) []RequestCount {
			if r.Grant == nil {
				return nil
			}
			return r.Grant.Requests
		})
		out = append(out, s)
	}
	return out
}

// medianRequests takes the median per-claim count of every request kind
// seen in any run (a run that did not send it counts as 0).
func medianRequests(runs []RunResult, of func(RunResult) []RequestCount) []RequestCount {
	keys := map[requestKey]bool{}
	for _, r := range runs {
		for _, rc := range of(r) {
			keys[requestKey{rc.Client, rc.Verb, rc.Resource}] = true
		}
	}
	var out []RequestCount
	for k := range keys {
		per, tot := make([]float64, len(runs)), make([]float64, len(runs))
		for i, r := range runs {
			for _, rc := range of(r) {
				if (requestKey{rc.Client, rc.Verb, rc.Resource}) == k {
					per[i], tot[i] = rc.PerClaim, rc.Total
				}
			}
		}
		out = append(out, RequestCount{Client: k.client, Verb: k.verb, Resource: k.resource, Total: median(tot), PerClaim: median(per)})
	}
	sortRequests(out)
	return out
}

func sortRequests(rs []RequestCount) {
	slices.SortFunc(rs, func(a, b RequestCount) int {
		return strings.Compare(a.Client+" "+a.Resource+" "+a.Verb, b.Client+" "+b.Resource+" "+b.Verb)
	})
}

// WriteJSON writes the report into dir as <timestamp>.json and returns the path.
func (r *Report) WriteJSON(dir, stamp string) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, stamp+".json")
	return path, os.WriteFile(path, append(data, '\n'), 0o644)
}

// PrintTable writes the runs, one line each, then the medians side by side
// with upstream's figures, then the sidecar's requests per claim.
func (r *Report) PrintTable(w io.Writer) {
	cfg := r.Config
	fmt.Fprintf(w, "\nLoad benchmark: %d claims in %d namespaces restoring %s/%s (%d MiB) at once; %d claims created before their grant.\n",
		cfg.Claims, cfg.Namespaces, cfg.SourceNamespace, snapshotName, cfg.SourceMiB, cfg.GrantClaims)
	fmt.Fprintf(w, "Machine: %d CPUs, %s. Latencies in seconds.\n\n", r.Machine.CPUs, r.Machine.Model)

	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "run\tlimits\tPVs/s\tbound/s\tcreate→PV p50/p95/p99\tgrant→PV p50/p99\tmain req/claim\tevents req/claim\tCPU ms/claim\tpeak RSS MiB\terror")
	for _, run := range r.Runs {
		f := run.Fanout
		grant := "-"
		if run.Grant != nil {
			grant = fmt.Sprintf("%.2f / %.2f", run.Grant.GrantToPV.P50, run.Grant.GrantToPV.P99)
		}
		fmt.Fprintf(tw, "%d\t%s\t%.2f\t%.2f\t%.1f / %.1f / %.1f\t%s\t%.2f\t%.2f\t%.1f\t%.1f\t%s\n", run.Run, run.Limits, f.PVsPerSecond, f.BoundPerSecond,
			f.CreateToPV.P50, f.CreateToPV.P95, f.CreateToPV.P99, grant, f.RequestsPerClaim["main"], f.RequestsPerClaim["events"],
			f.CPUMsPerClaim, run.PeakRSSMiB, run.Error)
	}
	tw.Flush()
	if len(r.Summary) == 0 {
		return
	}

	fmt.Fprintf(w, "\nMedians over runs, next to upstream %s at %s (%d claims in %d namespaces):\n\n", Upstream.Version, upstreamLimits(), Upstream.Claims, Upstream.Namespaces)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	header := "figure"
	for _, s := range r.Summary {
		header += fmt.Sprintf("\t%s (%d runs)", s.Limits, s.Runs)
	}
	fmt.Fprintln(tw, header+"\tupstream")
	row := func(name, upstream string, f func(Summary) string) {
		line := name
		for _, s := range r.Summary {
			line += "\t" + f(s)
		}
		fmt.Fprintln(tw, line+"\t"+upstream)
	}
	row("PVs created / s", "-", func(s Summary) string { return fmt.Sprintf("%.2f (%.1f× upstream)", s.PVsPerSecond, s.PVsVsUpstream) })
	row("claims bound / s", fmt.Sprintf("%.2f", Upstream.ClaimsPerSecond), func(s Summary) string {
		return fmt.Sprintf("%.2f (%.1f× upstream)", s.BoundPerSecond, s.BoundVsUpstream)
	})
	row("create→PV p50 / p95 / p99", "-", func(s Summary) string { return pcts(s.CreateToPV, false) })
	row("create→bound p50 / p95 / p99", fmt.Sprintf("%.0f / %.0f / -", Upstream.CreateToBoundP50, Upstream.CreateToBoundP95), func(s Summary) string { return pcts(s.CreateToBound, false) })
	row("grant→PV p50 / p99 (max)", fmt.Sprintf("%.0f–%.0f", Upstream.GrantWaitMin, Upstream.GrantWaitMax), func(s Summary) string { return pcts(s.GrantToPV, true) })
	row("grant→bound p50 / p99 (max)", "-", func(s Summary) string { return pcts(s.GrantToBound, true) })
	row("grant: sidecar main requests / claim", "-", func(s Summary) string {
		return fmt.Sprintf("%.2f", perClient(s.GrantRequests)["main"])
	})
	row("API requests / claim: main", "-", func(s Summary) string { return fmt.Sprintf("%.2f", s.RequestsPerClaim["main"]) })
	row("API requests / claim: events", "-", func(s Summary) string { return fmt.Sprintf("%.2f", s.RequestsPerClaim["events"]) })
	row("API requests / claim: total", fmt.Sprintf("≈%.0f", Upstream.RequestsPerClaim), func(s Summary) string {
		return fmt.Sprintf("%.2f", s.RequestsPerClaim["main"]+s.RequestsPerClaim["events"])
	})
	row("failed attempts (retried)", "-", func(s Summary) string { return fmt.Sprintf("%.0f", s.FailedAttempts) })
	row("sidecar CPU ms / claim", "-", func(s Summary) string { return fmt.Sprintf("%.1f", s.CPUMsPerClaim) })
	row("sidecar cores (average)", "-", func(s Summary) string { return fmt.Sprintf("%.3f", s.SidecarCores) })
	row("machine busy (all cores)", "-", func(s Summary) string { return fmt.Sprintf("%.0f%%", 100*s.MachineBusy) })
	row("sidecar peak RSS MiB", "-", func(s Summary) string { return fmt.Sprintf("%.1f", s.PeakRSSMiB) })
	row("kube-controller-manager requests / claim", "-", func(s Summary) string { return fmt.Sprintf("%.2f", s.KCMRequestsPerClaim) })
	row("kube-controller-manager throttled (s, sum)", "-", func(s Summary) string { return fmt.Sprintf("%.0f", s.KCMThrottledSeconds) })
	row("cleanup: all PVs deleted after (s)", "-", func(s Summary) string { return fmt.Sprintf("%.1f", s.DeleteSeconds) })
	row("cleanup: sidecar requests / PV", "-", func(s Summary) string {
		var n float64
		for _, rc := range s.DeleteRequests {
			n += rc.PerClaim
		}
		return fmt.Sprintf("%.2f", n)
	})
	tw.Flush()

	fmt.Fprintf(w, "\nSidecar API requests per claim in the fan-out (medians; client verb resource):\n\n")
	r.printRequests(w, func(s Summary) []RequestCount { return s.Requests })
	fmt.Fprintf(w, "\nSidecar API requests per PV while the fan-out's namespaces are deleted (medians):\n\n")
	r.printRequests(w, func(s Summary) []RequestCount { return s.DeleteRequests })
}

// printRequests prints one request table, a column per limits.
func (r *Report) printRequests(w io.Writer, of func(Summary) []RequestCount) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	header := "client\tverb\tresource"
	for _, s := range r.Summary {
		header += "\t" + s.Limits.String()
	}
	fmt.Fprintln(tw, header)
	keys := map[requestKey]bool{}
	var order []RequestCount
	for _, s := range r.Summary {
		for _, rc := range of(s) {
			k := requestKey{rc.Client, rc.Verb, rc.Resource}
			if !keys[k] {
				keys[k] = true
				order = append(order, rc)
			}
		}
	}
	sortRequests(order)
	for _, rc := range order {
		line := rc.Client + "\t" + rc.Verb + "\t" + rc.Resource
		for _, s := range r.Summary {
			v := 0.0
			for _, x := range of(s) {
				if x.Client == rc.Client && x.Verb == rc.Verb && x.Resource == rc.Resource {
					v = x.PerClaim
				}
			}
			line += fmt.Sprintf("\t%.3f", v)
		}
		fmt.Fprintln(tw, line)
	}
	tw.Flush()
}

func upstreamLimits() string {
	return fmt.Sprintf("%g QPS / burst %d", Upstream.Limits.QPS, Upstream.Limits.Burst)
}

func pcts(p Percentiles, short bool) string {
	if p.N == 0 || math.IsNaN(p.P50) {
		return "-"
	}
	if short {
		return fmt.Sprintf("%.2f / %.2f (%.2f)", p.P50, p.P99, p.Max)
	}
	return fmt.Sprintf("%.1f / %.1f / %.1f", p.P50, p.P95, p.P99)
}
