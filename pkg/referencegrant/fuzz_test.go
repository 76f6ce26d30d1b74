package referencegrant

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewayv1beta1 "sigs.k8s.io/gateway-api/apis/v1beta1"
)

// Fuzz limits keep one execution fast: the API allows 16 entries per list,
// a little more is tried.
const (
	fuzzMaxOps     = 32
	fuzzMaxEntries = 17
	fuzzMaxQueries = 64
)

// FuzzIndex feeds the grant index a program of grant additions, updates,
// deletions and tombstones written as text (seeds in testdata/fuzz/FuzzIndex
// show the format: one operation a line, fields separated by "|"):
//
//	+|v1beta1|<namespace>|<name>|<group>,<kind>,<namespace>;...|<group>,<kind>[,<name>];...
//	-|<namespace>|<name>
//	~|<tombstone key>
//	?|<group>,<kind>,<namespace>|<group>,<kind>,<namespace>,<name>
//
// After every operation it checks every query (those written with "?" and
// ones derived from each grant's entries) against a model of "ReferenceGrant
// semantics" in docs/design.md: a reference is allowed only when one grant
// in the target's namespace has a from and a to that match it, the grant
// named is the smallest such one, and every decision that changed was
// announced to listeners. At the end a new grant is added and deleted again,
// which must leave every answer as it was.
func FuzzIndex(f *testing.F) {
	f.Add("+|v1|prod|g|,PersistentVolumeClaim,dev|snapshot.storage.k8s.io,VolumeSnapshot,nightly\n" +
		"?|,PersistentVolumeClaim,dev|snapshot.storage.k8s.io,VolumeSnapshot,prod,nightly\n-|prod|g")
	f.Fuzz(func(t *testing.T, program string) {
		ops := parseFuzzProgram(program)
		x := NewIndex()
		var changes []Change
		x.AddListener(func(c Change) { changes = append(changes, c) })
		m := fuzzModel{grants: map[grantID]*gatewayv1.ReferenceGrant{}}
		queries := fuzzQueries{}
		for _, op := range ops {
			if op.query != nil {
				queries.add(*op.query)
			}
			if op.grant != nil {
				queries.derive(op.grant)
			}
		}
		before := decide(t, x, queries.list)
		for i, op := range ops {
			changes = changes[:0]
			m.apply(t, x, op)
			after := decide(t, x, queries.list)
			for _, q := range queries.list {
				got := after[q]
				m.verify(t, q, got, fmt.Sprintf("after operation %d (%s)", i, op))
				if got != before[q] && !slices.ContainsFunc(changes, func(c Change) bool { return c.Affects(q) }) {
					t.Fatalf("after operation %d (%s) the decision on %+v changed from %+v to %+v, but no listener call %v covers it",
						i, op, q, before[q], got, changes)
				}
			}
			if x.Len() != len(m.grants) {
				t.Fatalf("after operation %d (%s) the index holds %d grants, the model %d", i, op, x.Len(), len(m.grants))
			}
			before = after
		}
		// Removal restores the previous answer: add a grant the index does
		// not hold, then delete it.
		probe := m.probe(ops)
		if probe == nil {
			return
		}
		m.apply(t, x, fuzzOp{grant: probe})
		m.apply(t, x, fuzzOp{delete: &grantID{namespace: probe.Namespace, name: probe.Name}})
		for q, got := range decide(t, x, queries.list) {
			if got != before[q] {
				t.Fatalf("adding and deleting grant %s/%s changed the decision on %+v from %+v to %+v",
					probe.Namespace, probe.Name, q, before[q], got)
			}
		}
	})
}

// fuzzOp is one parsed line of a FuzzIndex program.
type fuzzOp struct {
	line string
	// grant is upserted (as v1beta1 when beta).
	grant *gatewayv1.ReferenceGrant
	beta  bool
	// delete deletes the grant with this id.
	delete *grantID
	// tombstone deletes through an informer tombstone with this key.
	tombstone *string
	query     *Reference
}

func (o fuzzOp) String() string { return o.line }

func parseFuzzProgram(program string) []fuzzOp {
	var ops []fuzzOp
	for _, line := range strings.Split(program, "\n") {
		if len(ops) == fuzzMaxOps {
			break
		}
		f := strings.Split(line, "|")
		op := fuzzOp{line: line}
		switch {
		case f[0] == "+" && len(f) == 6:
			op.beta = f[1] == "v1beta1"
			op.grant = &gatewayv1.ReferenceGrant{
				ObjectMeta: metav1.ObjectMeta{Namespace: f[2], Name: f[3], ResourceVersion: fmt.Sprint(len(ops))},
			}
			// An object read from the API always has a name.
			if f[3] == "" {
				continue
			}
			for _, e := range splitEntries(f[4]) {
				op.grant.Spec.From = append(op.grant.Spec.From, gatewayv1.ReferenceGrantFrom{
					Group: gatewayv1.Group(e[0]), Kind: gatewayv1.Kind(e[1]), Namespace: gatewayv1.Namespace(e[2])})
			}
			for _, e := range splitEntries(f[5]) {
				to := gatewayv1.ReferenceGrantTo{Group: gatewayv1.Group(e[0]), Kind: gatewayv1.Kind(e[1])}
				if len(e) > 3 { // a third field was written: the name is set, maybe to ""
					to.Name = (*gatewayv1.ObjectName)(&e[2])
				}
				op.grant.Spec.To = append(op.grant.Spec.To, to)
			}
		case f[0] == "-" && len(f) == 3:
			op.delete = &grantID{namespace: f[1], name: f[2]}
		case f[0] == "~" && len(f) == 2:
			op.tombstone = &f[1]
		case f[0] == "?" && len(f) == 3:
			a, b := fields(f[1], 3), fields(f[2], 4)
			op.query = &Reference{FromGroup: a[0], FromKind: a[1], FromNamespace: a[2],
				ToGroup: b[0], ToKind: b[1], ToNamespace: b[2], ToName: b[3]}
		default:
			continue
		}
		ops = append(ops, op)
	}
	return ops
}

// splitEntries splits "a,b,c;d,e" into entries of at least three fields; a
// fourth element, when present, records that the entry had a third field.
func splitEntries(s string) [][]string {
	if s == "" {
		return nil
	}
	var out [][]string
	for _, e := range strings.Split(s, ";") {
		if len(out) == fuzzMaxEntries {
			break
		}
		parts := strings.Split(e, ",")
		fs := fields(e, 3)
		if len(parts) >= 3 {
			fs = append(fs, "set")
		}
		out = append(out, fs)
	}
	return out
}

// fields splits s at commas into exactly n fields, padding with "".
func fields(s string, n int) []string {
	parts := strings.SplitN(s, ",", n)
	for len(parts) < n {
		parts = append(parts, "")
	}
	return parts
}

// fuzzQueries is the set of references checked after every operation.
type fuzzQueries struct {
	seen map[Reference]bool
	list []Reference
}

func (q *fuzzQueries) add(r Reference) {
	if q.seen == nil {
		q.seen = map[Reference]bool{}
	}
	if len(q.list) < fuzzMaxQueries && !q.seen[r] {
		q.seen[r] = true
		q.list = append(q.list, r)
	}
}

// derive adds the references a grant's entries are about: each from × to
// pair as written, for the name it names (or any name) and for another name.
func (q *fuzzQueries) derive(g *gatewayv1.ReferenceGrant) {
	for _, from := range g.Spec.From {
		for _, to := range g.Spec.To {
			r := Reference{FromGroup: string(from.Group), FromKind: string(from.Kind), FromNamespace: string(from.Namespace),
				ToGroup: string(to.Group), ToKind: string(to.Kind), ToNamespace: g.Namespace, ToName: "some-name"}
			if to.Name != nil {
				r.ToName = string(*to.Name)
			}
			q.add(r)
			r.ToName += "-other"
			q.add(r)
		}
	}
}

func decide(t *testing.T, x *Index, refs []Reference) map[Reference]Decision {
	out := make(map[Reference]Decision, len(refs))
	for _, r := range refs {
		d, err := x.Check(r)
		if err != nil {
			t.Fatalf("Check(%+v) on an available index: %v", r, err)
		}
		out[r] = d
	}
	return out
}

// fuzzModel is what the index should hold, kept the simplest way.
type fuzzModel struct {
	grants map[grantID]*gatewayv1.ReferenceGrant
}

func (m *fuzzModel) apply(t *testing.T, x *Index, op fuzzOp) {
	switch {
	case op.grant != nil:
		var obj any = op.grant
		if op.beta {
			obj = (*gatewayv1beta1.ReferenceGrant)(op.grant)
		}
		if err := x.Upsert(obj); err != nil {
			t.Fatalf("Upsert(%s): %v", op, err)
		}
		m.grants[grantID{namespace: op.grant.Namespace, name: op.grant.Name}] = op.grant
	case op.delete != nil:
		g := &gatewayv1.ReferenceGrant{ObjectMeta: metav1.ObjectMeta{Namespace: op.delete.namespace, Name: op.delete.name}}
		if err := x.Delete(g); err != nil {
			t.Fatalf("Delete(%s): %v", op, err)
		}
		delete(m.grants, *op.delete)
	case op.tombstone != nil:
		err := x.Delete(cache.DeletedFinalStateUnknown{Key: *op.tombstone})
		ns, name, splitErr := cache.SplitMetaNamespaceKey(*op.tombstone)
		if (err != nil) != (splitErr != nil) {
			t.Fatalf("Delete(tombstone %q) = %v; the key splits with error %v", *op.tombstone, err, splitErr)
		}
		if err == nil {
			delete(m.grants, grantID{namespace: ns, name: name})
		}
	}
}

// allows reports which grants allow ref, the way docs/design.md says.
func (m *fuzzModel) allows(ref Reference) []string {
	var names []string
	for id, g := range m.grants {
		if id.namespace != ref.ToNamespace {
			continue
		}
		from := slices.ContainsFunc(g.Spec.From, func(f gatewayv1.ReferenceGrantFrom) bool {
			return string(f.Group) == ref.FromGroup && string(f.Kind) == ref.FromKind && string(f.Namespace) == ref.FromNamespace
		})
		to := slices.ContainsFunc(g.Spec.To, func(e gatewayv1.ReferenceGrantTo) bool {
			return string(e.Group) == ref.ToGroup && string(e.Kind) == ref.ToKind &&
				(e.Name == nil || *e.Name == "" || string(*e.Name) == ref.ToName)
		})
		if from && to {
			names = append(names, id.name)
		}
	}
	slices.Sort(names)
	return names
}

// verify checks one decision against the model. References with an empty
// kind or namespace cannot come from a claim; for them only "allowed means a
// grant matches" is required (the index ignores entries without a kind or
// namespace, which the API never lets a grant have).
func (m *fuzzModel) verify(t *testing.T, ref Reference, got Decision, when string) {
	if ref.FromNamespace == ref.ToNamespace {
		if got != (Decision{Allowed: true}) {
			t.Fatalf("%s: reference within namespace %q decided %+v, want allowed without a grant", when, ref.ToNamespace, got)
		}
		return
	}
	granting := m.allows(ref)
	if got.Allowed && !slices.Contains(granting, got.Grant) {
		t.Fatalf("%s: %+v allowed by grant %q, but the grants that match it are %q (grants: %v)",
			when, ref, got.Grant, granting, slices.Collect(maps.Keys(m.grants)))
	}
	wellFormed := ref.FromKind != "" && ref.FromNamespace != "" && ref.ToKind != "" && ref.ToNamespace != ""
	if !wellFormed {
		return
	}
	want := Decision{}
	if len(granting) > 0 {
		want = Decision{Allowed: true, Grant: granting[0]}
	}
	if got != want {
		t.Fatalf("%s: %+v decided %+v, want %+v", when, ref, got, want)
	}
}

// probe returns a grant the index does not hold: the spec of the program's
// last grant under a new name.
func (m *fuzzModel) probe(ops []fuzzOp) *gatewayv1.ReferenceGrant {
	for i := len(ops) - 1; i >= 0; i-- {
		if ops[i].grant == nil {
			continue
		}
		g := ops[i].grant.DeepCopy()
		for n := 0; ; n++ {
			g.Name = fmt.Sprintf("zz-probe-%d", n)
			if m.grants[grantID{namespace: g.Namespace, name: g.Name}] == nil {
				return g
			}
		}
	}
	return nil
}
