package soak

import (
	"fmt"
	"math/rand/v2"
	"time"
)

// The plan is everything random about a run, drawn from its seed before it
// starts: the workload's operations in batches, and the faults. Batch k is
// released when fault k comes (batch 0 before the first fault, the last one
// after the last fault), so the same seed always hits the same claims with
// the same fault; what varies between two runs of a seed is only timing.

// Source kinds of dataSourceRef.
const (
	KindSnapshot = "VolumeSnapshot"
	KindClaim    = "PersistentVolumeClaim"
)

// Names of the objects every workload namespace holds from the start.
const (
	sourceClaim    = "src"
	sourceSnapshot = "snap"
)

// GrantPolicy is what a cross-namespace claim's operation does with the
// ReferenceGrant that would allow it.
type GrantPolicy string

const (
	// GrantFirst: the grant is made (if missing) before the claim.
	GrantFirst GrantPolicy = "granted"
	// GrantLate: the claim first, the grant GrantDelay later.
	GrantLate GrantPolicy = "late"
	// GrantRevoke: granted first, revoked GrantDelay after the claim.
	GrantRevoke GrantPolicy = "revoke"
	// GrantNone: this operation makes no grant (another may).
	GrantNone GrantPolicy = "none"
)

// SourceRef names a claim's data source.
type SourceRef struct {
	Namespace, Kind, Name string
}

func (s SourceRef) String() string { return fmt.Sprintf("%s %s/%s", s.Kind, s.Namespace, s.Name) }

// Pair is what one ReferenceGrant allows: claims of From to use sources of
// Kind in To (the grant lives in To, names no object).
type Pair struct {
	From, To, Kind string
}

func (p Pair) String() string { return fmt.Sprintf("%s→%s %s", p.From, p.To, p.Kind) }

// ClaimSpec is one claim of the workload.
type ClaimSpec struct {
	Namespace, Name string
	// Source is nil for an empty volume.
	Source *SourceRef
	// Grant and GrantDelay apply to claims of a source in another namespace.
	Grant      GrantPolicy
	GrantDelay time.Duration
	// DeleteAfter > 0 deletes the claim that long after creating it,
	// whatever its state (mid-flight); DeleteBound deletes it once Bound.
	DeleteAfter time.Duration
	DeleteBound bool
}

// Cross reports whether the claim's source is in another namespace.
func (c ClaimSpec) Cross() bool { return c.Source != nil && c.Source.Namespace != c.Namespace }

// Pair is the grant a cross-namespace claim needs.
func (c ClaimSpec) Pair() Pair {
	return Pair{From: c.Namespace, To: c.Source.Namespace, Kind: c.Source.Kind}
}

// EphemeralSpec is a source made during the run, claims made from it, and
// the source deleted while they may still be provisioned.
type EphemeralSpec struct {
	Namespace, Claim, Snapshot string
	Dependents                 []ClaimSpec
	// DeleteAfter is the pause between creating the dependents and
	// deleting the source claim and/or its snapshot.
	DeleteAfter                 time.Duration
	DeleteClaim, DeleteSnapshot bool
}

// Op kinds.
const (
	OpClaim       = "claim"
	OpEphemeral   = "ephemeral-source"
	OpGrantToggle = "grant-toggle"
)

// Op is one operation of the workload.
type Op struct {
	Index int
	Kind  string
	// Claim for OpClaim, Ephemeral for OpEphemeral, Pair for OpGrantToggle
	// (make the grant if missing, revoke it if there).
	Claim     *ClaimSpec
	Ephemeral *EphemeralSpec
	Pair      *Pair
}

// Claims is how many claims the op creates.
func (o Op) Claims() int {
	switch o.Kind {
	case OpClaim:
		return 1
	case OpEphemeral:
		return 1 + len(o.Ephemeral.Dependents)
	}
	return 0
}

// Fault is one fault of the schedule.
type Fault struct {
	Index int
	Kind  string
	// Gap is the pause before the fault's batch is released; Offset the
	// pause between releasing it and injecting the fault, so its claims
	// are in flight.
	Gap, Offset time.Duration
	// Down is how long a killed component stays down.
	Down time.Duration
	// Method, Count: error faults fail the next Count calls of Method.
	Method string
	Count  int
	// Delay, IgnoreCancel, Hold: delay faults make calls of Method take
	// Delay (running on after the caller gives up with IgnoreCancel) for
	// Hold.
	Delay        time.Duration
	IgnoreCancel bool
	Hold         time.Duration
}

func (f Fault) String() string {
	switch {
	case f.Count > 0:
		return fmt.Sprintf("#%d %s: next %d %s calls fail", f.Index, f.Kind, f.Count, f.Method)
	case f.Kind == FaultDelay:
		return fmt.Sprintf("#%d %s: %s calls take %s (ignoreCancel %v) for %s", f.Index, f.Kind, f.Method, f.Delay, f.IgnoreCancel, f.Hold)
	}
	return fmt.Sprintf("#%d %s: down %s", f.Index, f.Kind, f.Down)
}

// Plan is a run's workload and faults.
type Plan struct {
	Seed       uint64
	Namespaces []string
	// Batches[k] is released with fault k; the last one after the last fault.
	Batches [][]Op
	Faults  []Fault
}

// Claims counts the claims the plan makes, the namespaces' sources included.
func (p *Plan) Claims() int {
	n := len(p.Namespaces)
	for _, b := range p.Batches {
		for _, op := range b {
			n += op.Claims()
		}
	}
	return n
}

// NewPlan draws the plan of cfg from cfg.Seed.
func NewPlan(cfg Config) *Plan {
	p := &Plan{Seed: cfg.Seed}
	for i := range cfg.Namespaces {
		p.Namespaces = append(p.Namespaces, fmt.Sprintf("soak-%02d", i))
	}
	// Two streams: changing the faults leaves the workload as it was.
	w := &drawer{rand.New(rand.NewPCG(cfg.Seed, 0x50a4))}
	f := &drawer{rand.New(rand.NewPCG(cfg.Seed, 0xfa17))}
	p.Faults = drawFaults(f, cfg)
	ops := drawOps(w, p.Namespaces, cfg.Claims-cfg.Namespaces)
	p.Batches = make([][]Op, len(p.Faults)+1)
	for i, op := range ops {
		b := i * len(p.Batches) / len(ops)
		p.Batches[b] = append(p.Batches[b], op)
	}
	return p
}

type drawer struct{ *rand.Rand }

// between draws a duration in [lo, hi], in tenths of a second.
func (d *drawer) between(lo, hi time.Duration) time.Duration {
	if hi <= lo {
		return lo
	}
	steps := int64((hi - lo) / (100 * time.Millisecond))
	return lo + time.Duration(d.Int64N(steps+1))*100*time.Millisecond
}

// pick draws one of choices by weight.
func pick[T any](d *drawer, choices []T, weights []int) T {
	total := 0
	for _, w := range weights {
		total += w
	}
	n := d.IntN(total)
	for i, w := range weights {
		if n < w {
			return choices[i]
		}
		n -= w
	}
	return choices[len(choices)-1]
}

func (d *drawer) chance(percent int) bool { return d.IntN(100) < percent }

// drawFaults draws cfg.Faults faults: every kind MinPerKind times first (as
// far as the count allows), then kinds at random, all in a random order.
func drawFaults(d *drawer, cfg Config) []Fault {
	var kinds []string
	for range cfg.MinPerKind {
		kinds = append(kinds, cfg.Kinds...)
	}
	if len(kinds) > cfg.Faults {
		d.Shuffle(len(kinds), func(i, j int) { kinds[i], kinds[j] = kinds[j], kinds[i] })
		kinds = kinds[:cfg.Faults]
	}
	for len(kinds) < cfg.Faults {
		kinds = append(kinds, cfg.Kinds[d.IntN(len(cfg.Kinds))])
	}
	d.Shuffle(len(kinds), func(i, j int) { kinds[i], kinds[j] = kinds[j], kinds[i] })
	out := make([]Fault, len(kinds))
	for i, k := range kinds {
		f := Fault{Index: i, Kind: k, Gap: d.between(cfg.GapMin, cfg.GapMax), Offset: d.between(0, cfg.OffsetMax)}
		switch k {
		case FaultSidecarKill, FaultDriverRestart:
			f.Down = d.between(0, 3*time.Second)
		case FaultAPIServerRestart, FaultSnapshotControllerRestart:
			f.Down = d.between(0, 5*time.Second)
		case FaultLeaderKill:
		case FaultDelay:
			f.Method = pick(d, []string{"CreateVolume", "DeleteVolume"}, []int{3, 1})
			f.Delay = cfg.SidecarTimeout + d.between(2*time.Second, 8*time.Second)
			f.IgnoreCancel = d.chance(75)
			f.Hold = d.between(10*time.Second, cfg.DelayHoldMax)
		default: // error-<Code>
			f.Method = pick(d, []string{"CreateVolume", "DeleteVolume", "CreateSnapshot", "DeleteSnapshot"}, []int{5, 2, 2, 1})
			f.Count = 1 + d.IntN(cfg.MaxErrors)
		}
		out[i] = f
	}
	return out
}

// drawOps draws operations until they make budget claims.
func drawOps(d *drawer, namespaces []string, budget int) []Op {
	var ops []Op
	made := 0
	for made < budget {
		i := len(ops)
		name := fmt.Sprintf("c%04d", i)
		var op Op
		switch kind := pick(d, []string{OpClaim, OpEphemeral, OpGrantToggle}, []int{80, 8, 12}); {
		case kind == OpGrantToggle:
			from, to := d.twoNamespaces(namespaces)
			op = Op{Index: i, Kind: OpGrantToggle, Pair: &Pair{From: from, To: to, Kind: pick(d, []string{KindSnapshot, KindClaim}, []int{1, 1})}}
		case kind == OpEphemeral && budget-made >= 3:
			ns := namespaces[d.IntN(len(namespaces))]
			e := &EphemeralSpec{Namespace: ns, Claim: "e" + name, Snapshot: "e" + name + "-snap", DeleteAfter: d.between(0, 2*time.Second)}
			e.DeleteClaim, e.DeleteSnapshot = true, true
			switch d.IntN(3) {
			case 0:
				e.DeleteClaim = false
			case 1:
				e.DeleteSnapshot = false
			}
			deps := min(2+d.IntN(2), budget-made-1)
			for j := range deps {
				kind := pick(d, []string{KindSnapshot, KindClaim}, []int{1, 1})
				target := ns
				if d.chance(60) {
					target = namespaces[d.IntN(len(namespaces))]
				}
				c := d.claim(target, fmt.Sprintf("%s-%c", name, 'a'+j), &SourceRef{Namespace: ns, Kind: kind, Name: map[string]string{KindSnapshot: e.Snapshot, KindClaim: e.Claim}[kind]})
				e.Dependents = append(e.Dependents, c)
			}
			op = Op{Index: i, Kind: OpEphemeral, Ephemeral: e}
		default:
			var src *SourceRef
			ns := namespaces[d.IntN(len(namespaces))]
			switch pick(d, []string{"plain", "same", "cross"}, []int{20, 30, 50}) {
			case "same":
				src = d.source(ns)
			case "cross":
				var from, to string
				from, to = d.twoNamespaces(namespaces)
				ns, src = from, d.source(to)
			}
			c := d.claim(ns, name, src)
			op = Op{Index: i, Kind: OpClaim, Claim: &c}
		}
		made += op.Claims()
		ops = append(ops, op)
	}
	return ops
}

// twoNamespaces draws two different namespaces.
func (d *drawer) twoNamespaces(namespaces []string) (string, string) {
	a := d.IntN(len(namespaces))
	b := (a + 1 + d.IntN(len(namespaces)-1)) % len(namespaces)
	return namespaces[a], namespaces[b]
}

// source draws one of a namespace's permanent sources.
func (d *drawer) source(ns string) *SourceRef {
	if d.chance(50) {
		return &SourceRef{Namespace: ns, Kind: KindSnapshot, Name: sourceSnapshot}
	}
	return &SourceRef{Namespace: ns, Kind: KindClaim, Name: sourceClaim}
}

// claim draws what happens to one claim besides its source.
func (d *drawer) claim(ns, name string, src *SourceRef) ClaimSpec {
	c := ClaimSpec{Namespace: ns, Name: name, Source: src}
	if c.Cross() {
		c.Grant = pick(d, []GrantPolicy{GrantFirst, GrantLate, GrantRevoke, GrantNone}, []int{55, 15, 15, 15})
		c.GrantDelay = d.between(0, 3*time.Second)
	}
	switch d.IntN(10) {
	case 0:
		c.DeleteAfter = d.between(100*time.Millisecond, 3*time.Second)
	case 1:
		c.DeleteBound = true
	}
	return c
}
