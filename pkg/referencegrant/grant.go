package referencegrant

import (
	"cmp"
	"fmt"
	"slices"

	"k8s.io/client-go/tools/cache"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewayv1beta1 "sigs.k8s.io/gateway-api/apis/v1beta1"
)

// grantID names one grant. Grants are keyed by namespace and name rather than
// UID because informer deletions may arrive as tombstones that carry only the
// key.
type grantID struct {
	namespace, name string
}

// ruleKey is everything a Reference and a grant must agree on apart from the
// target's name. The grant's namespace is toNamespace, so a grant can never
// allow anything outside its own namespace.
type ruleKey struct {
	toNamespace, fromNamespace string
	fromGroup, fromKind        string
	toGroup, toKind            string
}

// permission is one (from, to) pair that a grant allows. A grant contributes
// the cross product of its from and to entries, because the API combines the
// entries of each list with OR.
type permission struct {
	key ruleKey
	// name is the target's name, or "" when every object of the kind is
	// allowed.
	name string
}

func comparePermissions(a, b permission) int {
	return cmp.Or(
		cmp.Compare(a.key.toNamespace, b.key.toNamespace),
		cmp.Compare(a.key.fromNamespace, b.key.fromNamespace),
		cmp.Compare(a.key.fromGroup, b.key.fromGroup),
		cmp.Compare(a.key.fromKind, b.key.fromKind),
		cmp.Compare(a.key.toGroup, b.key.toGroup),
		cmp.Compare(a.key.toKind, b.key.toKind),
		cmp.Compare(a.name, b.name),
	)
}

// asGrant converts the versions of ReferenceGrant we read into one internal
// form. v1beta1.ReferenceGrant is declared as a v1.ReferenceGrant, so the
// conversion is a pointer conversion and costs nothing; only TypeMeta is left
// saying v1beta1, which nothing here reads.
func asGrant(obj any) (*gatewayv1.ReferenceGrant, error) {
	switch g := obj.(type) {
	case *gatewayv1.ReferenceGrant:
		return g, nil
	case *gatewayv1beta1.ReferenceGrant:
		return (*gatewayv1.ReferenceGrant)(g), nil
	default:
		return nil, fmt.Errorf("expected a v1 or v1beta1 ReferenceGrant, got %T", obj)
	}
}

// idOf returns the namespace and name of a grant or of an informer tombstone
// for one; a tombstone may hold a stale object or none at all, but its key is
// always right.
func idOf(obj any) (grantID, error) {
	if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		ns, name, err := cache.SplitMetaNamespaceKey(tomb.Key)
		if err != nil {
			return grantID{}, fmt.Errorf("parsing deleted ReferenceGrant key %q: %w", tomb.Key, err)
		}
		return grantID{namespace: ns, name: name}, nil
	}
	g, err := asGrant(obj)
	if err != nil {
		return grantID{}, err
	}
	return grantID{namespace: g.Namespace, name: g.Name}, nil
}

// permissionsOf lists what a grant allows, sorted and without duplicates so
// that two versions of a grant can be compared to see whether an update
// changes any decision. Entries that cannot match any reference (a from
// without namespace or kind, a to without kind) are left out.
func permissionsOf(g *gatewayv1.ReferenceGrant) []permission {
	perms := make([]permission, 0, len(g.Spec.From)*len(g.Spec.To))
	for _, from := range g.Spec.From {
		if from.Namespace == "" || from.Kind == "" {
			continue
		}
		for _, to := range g.Spec.To {
			if to.Kind == "" {
				continue
			}
			p := permission{key: ruleKey{
				toNamespace:   g.Namespace,
				fromNamespace: string(from.Namespace),
				fromGroup:     string(from.Group),
				fromKind:      string(from.Kind),
				toGroup:       string(to.Group),
				toKind:        string(to.Kind),
			}}
			if to.Name != nil {
				p.name = string(*to.Name)
			}
			perms = append(perms, p)
		}
	}
	slices.SortFunc(perms, comparePermissions)
	return slices.Compact(perms)
}
