package soak

import (
	"fmt"
	"io"
	"maps"
	"math"
	"slices"
	"sort"
	"strings"
	"time"
)

// Report is what a run did and found.
type Report struct {
	Seed uint64 `json:"seed"`
	// Command reproduces the run (set by the caller, who knows its flags).
	Command  string    `json:"command"`
	Config   Config    `json:"config"`
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished"`
	// Seconds is the whole run, setup and cleanup included.
	Seconds float64 `json:"seconds"`
	CPUs    int     `json:"cpus"`

	Claims ClaimCounts `json:"claims"`
	// GrantsCreated and GrantsRevoked count the workload's grant writes.
	GrantsCreated int `json:"grantsCreated"`
	GrantsRevoked int `json:"grantsRevoked"`
	// RepeatsAfterRevocation counts CreateVolume calls that started more
	// than invariants.RevocationSlack after the grant was revoked, each the
	// repeat of an authorized call the sidecar settled.
	RepeatsAfterRevocation int `json:"repeatsAfterRevocation"`

	Faults []FaultResult `json:"faults"`
	// ByKind sums Faults up per kind, in AllKinds order.
	ByKind []KindFigures `json:"byKind"`
	// Exits are components that exited on their own and were started
	// again (a sidecar losing the driver or its lease exits, as upstream).
	Exits []Exit `json:"exits,omitempty"`

	// PeakRSSMiB is the highest VmHWM of any sidecar process; EndRSSMiB
	// each replica's VmRSS once the bed settled.
	PeakRSSMiB       float64            `json:"peakRSSMiB"`
	PeakRSSComponent string             `json:"peakRSSComponent"`
	EndRSSMiB        map[string]float64 `json:"endRSSMiB"`
	// SettleSeconds is how long the bed took to settle after the last fault.
	SettleSeconds float64 `json:"settleSeconds"`

	Violations []Violation `json:"violations"`
	// OpErrors are workload steps that could not be done; they are not
	// violations, but claims they would have made are missing.
	OpErrors []string `json:"opErrors,omitempty"`
}

// ClaimCounts are the claims of a run.
type ClaimCounts struct {
	// Planned and Created count the workload's (sources included);
	// Canaries the probes'.
	Planned  int `json:"planned"`
	Created  int `json:"created"`
	Canaries int `json:"canaries"`
	// CrossNamespace counts created claims of another namespace's source.
	CrossNamespace int `json:"crossNamespace"`
	// Deleted counts claims the run deleted (mid-flight, once Bound, or
	// sources) before the cleanup.
	Deleted int `json:"deleted"`
	// Bound and NotBound count the others once the bed settled; NotBound
	// are claims that may not be provisioned (no grant, source deleted).
	Bound    int `json:"bound"`
	NotBound int `json:"notBound"`
}

// KindFigures sums up the faults of one kind.
type KindFigures struct {
	Kind  string `json:"kind"`
	Count int    `json:"count"`
	// Recovery p50/p99/max over the faults that recovered, in seconds.
	RecoveryP50 float64 `json:"recoveryP50"`
	RecoveryP99 float64 `json:"recoveryP99"`
	RecoveryMax float64 `json:"recoveryMax"`
	Failed      int     `json:"failed"`
}

// percentile is the nearest-rank percentile of sorted values.
func percentile(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(p/100*float64(len(sorted)))) - 1
	return sorted[max(0, min(rank, len(sorted)-1))]
}

func byKind(results []FaultResult) []KindFigures {
	rec := map[string][]float64{}
	out := map[string]*KindFigures{}
	for _, r := range results {
		k := out[r.Kind]
		if k == nil {
			k = &KindFigures{Kind: r.Kind}
			out[r.Kind] = k
		}
		k.Count++
		if r.Error != "" {
			k.Failed++
			continue
		}
		rec[r.Kind] = append(rec[r.Kind], r.RecoverySeconds)
	}
	var figs []KindFigures
	for _, kind := range AllKinds() {
		k := out[kind]
		if k == nil {
			continue
		}
		v := rec[kind]
		sort.Float64s(v)
		k.RecoveryP50, k.RecoveryP99 = round2(percentile(v, 50)), round2(percentile(v, 99))
		if len(v) > 0 {
			k.RecoveryMax = round2(v[len(v)-1])
		}
		figs = append(figs, *k)
	}
	return figs
}

// Failed reports whether the run broke an invariant.
func (r *Report) Failed() bool { return len(r.Violations) > 0 }

// WriteText writes the summary a person reads.
func (r *Report) WriteText(out io.Writer) {
	fmt.Fprintf(out, "\nSoak run, seed %d: %s, %d CPUs, %s\n", r.Seed, r.Started.Format(time.RFC3339), r.CPUs, time.Duration(r.Seconds*float64(time.Second)).Round(time.Second))
	fmt.Fprintf(out, "Reproduce: %s\n\n", r.Command)
	c := r.Claims
	fmt.Fprintf(out, "Claims: %d made of %d planned (%d from another namespace) over %d namespaces, %d probes; %d deleted by the run; at the end %d Bound, %d not provisioned (no grant or source deleted)\n",
		c.Created, c.Planned, c.CrossNamespace, r.Config.Namespaces, c.Canaries, c.Deleted, c.Bound, c.NotBound)
	fmt.Fprintf(out, "Grants: %d created, %d revoked; CreateVolume repeats after a revocation (settling an authorized call): %d\n", r.GrantsCreated, r.GrantsRevoked, r.RepeatsAfterRevocation)
	fmt.Fprintf(out, "Settled %.1f s after the last fault\n\n", r.SettleSeconds)

	fmt.Fprintf(out, "%-28s %5s %8s %8s %8s %6s\n", "fault", "count", "p50 s", "p99 s", "max s", "failed")
	total := 0
	for _, k := range r.ByKind {
		total += k.Count
		fmt.Fprintf(out, "%-28s %5d %8.1f %8.1f %8.1f %6d\n", k.Kind, k.Count, k.RecoveryP50, k.RecoveryP99, k.RecoveryMax, k.Failed)
	}
	fmt.Fprintf(out, "%-28s %5d\n", "all", total)
	fmt.Fprintf(out, "(recovery: from the end of the fault until a probe operation started then succeeded)\n\n")

	reasons := map[string]int{}
	for _, e := range r.Exits {
		reasons[e.Component+": "+e.Reason]++
	}
	if len(reasons) > 0 {
		fmt.Fprintf(out, "Restarted after exiting on their own:")
		for _, k := range slices.Sorted(maps.Keys(reasons)) {
			fmt.Fprintf(out, " %s ×%d;", k, reasons[k])
		}
		fmt.Fprintln(out)
	}
	var end []string
	for _, k := range slices.Sorted(maps.Keys(r.EndRSSMiB)) {
		end = append(end, fmt.Sprintf("%s %.0f MiB", k, r.EndRSSMiB[k]))
	}
	fmt.Fprintf(out, "Sidecar memory: peak %.0f MiB (%s, VmHWM), at the end %s; bound %.0f MiB\n", r.PeakRSSMiB, r.PeakRSSComponent, strings.Join(end, ", "), r.Config.MaxRSSMiB)
	if len(r.OpErrors) > 0 {
		fmt.Fprintf(out, "\nWorkload steps not done (%d):\n", len(r.OpErrors))
		for _, e := range r.OpErrors {
			fmt.Fprintf(out, "  %s\n", e)
		}
	}

	count := map[string]int{}
	for _, v := range r.Violations {
		count[v.Check]++
	}
	fmt.Fprintf(out, "\nInvariants:\n")
	for _, check := range AllChecks {
		state := "ok"
		if n := count[check]; n > 0 {
			state = fmt.Sprintf("VIOLATED %d×", n)
		}
		fmt.Fprintf(out, "  %-26s %s\n", check, state)
	}
	if r.Failed() {
		fmt.Fprintf(out, "\n%d violations:\n", len(r.Violations))
		for _, v := range r.Violations {
			fmt.Fprintf(out, "  %s\n", v)
		}
		fmt.Fprintf(out, "\nFAIL: seed %d; rerun with: %s\n", r.Seed, r.Command)
		return
	}
	fmt.Fprintf(out, "\nPASS: no invariant violated (seed %d)\n", r.Seed)
}
