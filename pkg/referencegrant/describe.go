package referencegrant

import "fmt"

// Describe says, in words a user can act on, which ReferenceGrant would allow
// ref. Events on a waiting claim include it so that the fix can be copied into
// a manifest.
func Describe(ref Reference) string {
	return fmt.Sprintf("a ReferenceGrant in namespace %q with from {group: %q, kind: %s, namespace: %q} and to {group: %q, kind: %s, name: %q}",
		ref.ToNamespace, ref.FromGroup, ref.FromKind, ref.FromNamespace, ref.ToGroup, ref.ToKind, ref.ToName)
}

// DenyMessage explains a refused reference and how to allow it, e.g.
// `no ReferenceGrant in namespace "prod" allows PersistentVolumeClaims from
// "dev" to use VolumeSnapshot "nightly"; to allow it, create a ReferenceGrant
// in namespace "prod" with ...`.
func DenyMessage(ref Reference) string {
	return fmt.Sprintf("no ReferenceGrant in namespace %q allows %ss from %q to use %s %q; to allow it, create %s",
		ref.ToNamespace, ref.FromKind, ref.FromNamespace, ref.ToKind, ref.ToName, Describe(ref))
}
