package referencegrant

import (
	"cmp"
	"slices"
	"strings"
)

// Change tells listeners which decisions a grant event may have changed, so
// that they retry only the references it can affect: one grant edit in a
// namespace with thousands of waiting claims should not wake them all.
//
// A Change is either All (every decision may differ: grants became readable
// or unreadable) or describes one grant's edit: a reference may now be
// decided differently only when its referrer matches one of From, its target
// matches one of To, and the target lives in Namespace. From × To may
// over-approximate (an update that adds namespace qa to one target and drops
// target b for namespace dev lists both in both), never under-approximate.
type Change struct {
	// All is set when every decision may have changed; the other fields
	// are empty then.
	All bool
	// Namespace is the grant's namespace, where every target lives.
	Namespace string
	// From lists the grant's from entries that the edit concerns, sorted
	// and without duplicates.
	From []Origin
	// To lists the grant's to entries that the edit concerns, sorted and
	// without duplicates.
	To []Target
}

// Origin is one spec.from entry of a grant: which kind of object, in which
// namespace, may refer to the grant's targets.
type Origin struct {
	Group, Kind, Namespace string
}

// Target is one spec.to entry of a grant.
type Target struct {
	Group, Kind string
	// Name is "" when every object of the kind is meant.
	Name string
}

// AllChanged is the Change that asks listeners to retry everything.
var AllChanged = Change{All: true}

// Matches reports whether t covers the object group/kind/name.
func (t Target) Matches(group, kind, name string) bool {
	return t.Group == group && t.Kind == kind && (t.Name == "" || t.Name == name)
}

// Affects reports whether ref may be decided differently after c. It is the
// meaning of a Change, spelled out for listeners that hold references rather
// than an index of them.
func (c Change) Affects(ref Reference) bool {
	if c.All {
		return true
	}
	if ref.ToNamespace != c.Namespace || ref.FromNamespace == ref.ToNamespace {
		return false
	}
	if !slices.Contains(c.From, Origin{Group: ref.FromGroup, Kind: ref.FromKind, Namespace: ref.FromNamespace}) {
		return false
	}
	return slices.ContainsFunc(c.To, func(t Target) bool { return t.Matches(ref.ToGroup, ref.ToKind, ref.ToName) })
}

// String is for logs: "all", or
// "prod: from [PersistentVolumeClaim dev] to [snapshot.storage.k8s.io/VolumeSnapshot a]".
func (c Change) String() string {
	if c.All {
		return "all"
	}
	var b strings.Builder
	b.WriteString(c.Namespace)
	b.WriteString(": from [")
	for i, o := range c.From {
		if i > 0 {
			b.WriteString(", ")
		}
		if o.Group != "" {
			b.WriteString(o.Group + "/")
		}
		b.WriteString(o.Kind + " " + o.Namespace)
	}
	b.WriteString("] to [")
	for i, t := range c.To {
		if i > 0 {
			b.WriteString(", ")
		}
		if t.Group != "" {
			b.WriteString(t.Group + "/")
		}
		b.WriteString(t.Kind)
		if t.Name != "" {
			b.WriteString(" " + t.Name)
		} else {
			b.WriteString(" *")
		}
	}
	b.WriteString("]")
	return b.String()
}

// changeOf describes the decisions in namespace ns that differ between a
// grant's old and new permissions (either may be nil, for an add or a
// delete), and reports false when none do. Both lists are sorted by
// comparePermissions and without duplicates (permissionsOf makes them so),
// which lets one merge walk find the permissions in only one of them: a
// permission in both keeps every decision it takes part in, including which
// grant is named, so it wakes nobody.
func changeOf(ns string, old, cur []permission) (Change, bool) {
	c := Change{Namespace: ns}
	add := func(p permission) {
		c.From = append(c.From, Origin{Group: p.key.fromGroup, Kind: p.key.fromKind, Namespace: p.key.fromNamespace})
		c.To = append(c.To, Target{Group: p.key.toGroup, Kind: p.key.toKind, Name: p.name})
	}
	i, j := 0, 0
	for i < len(old) && j < len(cur) {
		switch d := comparePermissions(old[i], cur[j]); {
		case d < 0:
			add(old[i])
			i++
		case d > 0:
			add(cur[j])
			j++
		default:
			i++
			j++
		}
	}
	for ; i < len(old); i++ {
		add(old[i])
	}
	for ; j < len(cur); j++ {
		add(cur[j])
	}
	if len(c.From) == 0 {
		return Change{}, false
	}
	slices.SortFunc(c.From, func(a, b Origin) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Group, b.Group), cmp.Compare(a.Kind, b.Kind))
	})
	c.From = slices.Compact(c.From)
	slices.SortFunc(c.To, func(a, b Target) int {
		return cmp.Or(cmp.Compare(a.Group, b.Group), cmp.Compare(a.Kind, b.Kind), cmp.Compare(a.Name, b.Name))
	})
	c.To = slices.Compact(c.To)
	return c, true
}
