// Package sharing binds a claim to the volume of another claim — live, no
// copy — when the source's owner allows it (issue 11, "live sharing").
//
// Who decides what:
//   - the cluster admin turns it on: sidecar feature gate
//     CrossNamespaceVolumeSharing (pkg/features);
//   - the source's owner opts a claim in with annotation SharingAnnotation
//     (ReadOnlyMany or ReadWriteMany: the most it may be shared with) and,
//     for other namespaces, says who with a ReferenceGrant in the source's
//     namespace, from PersistentVolumeClaims of the consumer's namespace to
//     {group: "", kind: PersistentVolumeClaim, name: <source>} (the same
//     shape a clone needs: the annotation is what makes it live access);
//   - the consumer asks with annotation ShareFromAnnotation on a claim of a
//     StorageClass of the same driver.
//
// A share is a subordinate PersistentVolume: bound to the consumer's claim,
// the same driver, volume handle, attributes, fsType and node secrets as the
// source's PV, and annotations that name the source. The sidecar never calls
// CreateVolume for it and never DeleteVolume when it goes (pkg/provisioner
// asks Subordinate and SharedWith). While subordinates exist, the source
// claim and its PV carry SourceFinalizer: deleting the source claim leaves
// it Terminating until the last subordinate is gone, then its volume is
// reclaimed as usual.
//
// Revoking the annotation or the grant stops new shares at once; existing
// subordinates keep their volume (both claims are told with an Event).
package sharing

import (
	"fmt"
	"strings"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation"
)

// Annotations and the finalizer, all in the sidecar's own prefix.
const (
	// ShareFromAnnotation on a consumer claim: "<namespace>/<claim>" (or
	// "<claim>" for the claim's own namespace), the claim whose volume it
	// asks to share.
	ShareFromAnnotation = "provisioner.crossns.io/share-from"
	// SharingAnnotation on a source claim: "ReadOnlyMany" or
	// "ReadWriteMany", the most its volume may be shared with.
	SharingAnnotation = "provisioner.crossns.io/sharing"
	// SourceFinalizer is on a source claim and its PV while subordinates
	// exist (or an authorized claim is being bound to it).
	SourceFinalizer = "provisioner.crossns.io/shared-source-protection"

	// Provenance of a subordinate PV. SharedFromAnnotation marks the PV as
	// a subordinate: deleting it never deletes the volume.
	SharedFromAnnotation    = "provisioner.crossns.io/shared-from"        // "<namespace>/<claim>" of the source
	SharedFromUIDAnnotation = "provisioner.crossns.io/shared-from-uid"    // the source claim's UID
	SharedVolumeAnnotation  = "provisioner.crossns.io/shared-from-volume" // the source's PV, which owns the volume
	SharedAccessAnnotation  = "provisioner.crossns.io/shared-access"      // what the owner allowed when it was made
	// ReferenceGrantAnnotation names the grant (in the source's namespace)
	// that allowed a share across namespaces; the key pkg/provisioner uses
	// for copies too.
	ReferenceGrantAnnotation = "provisioner.crossns.io/reference-grant"

	// ExpansionRefusedSecret is the controller-expand, node-expand and
	// controller-modify secret a subordinate PV names, in the source's
	// namespace: it does not exist, so external-resizer and kubelet refuse
	// to expand or modify the shared volume through a subordinate (they read
	// the secret first and fail). Creating it defeats the refusal.
	ExpansionRefusedSecret = "shared-volume-expansion-refused"
)

// ClaimKind is the kind of sources and consumers, and of grant targets.
const ClaimKind = "PersistentVolumeClaim"

// Key names a claim: namespace and name.
type Key struct{ Namespace, Name string }

func (k Key) String() string { return k.Namespace + "/" + k.Name }

// Requested reports whether claim asks to share another claim's volume.
func Requested(claim *v1.PersistentVolumeClaim) bool {
	_, ok := claim.Annotations[ShareFromAnnotation]
	return ok
}

// ShareFrom returns the source a claim names in ShareFromAnnotation. ok is
// false when the claim has no such annotation; err says what is wrong with
// one that names no claim (shape, as a user writes it: "datasets/ml-data").
func ShareFrom(claim *v1.PersistentVolumeClaim) (k Key, ok bool, err error) {
	v, ok := claim.Annotations[ShareFromAnnotation]
	if !ok {
		return Key{}, false, nil
	}
	ns, name, found := strings.Cut(strings.TrimSpace(v), "/")
	if !found {
		ns, name = claim.Namespace, ns
	}
	if errs := validation.IsDNS1123Label(ns); len(errs) > 0 {
		return Key{}, true, fmt.Errorf("annotation %s=%q names namespace %q, which is not a namespace name (%s); write <namespace>/<claim>",
			ShareFromAnnotation, v, ns, strings.Join(errs, "; "))
	}
	if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 {
		return Key{}, true, fmt.Errorf("annotation %s=%q names claim %q, which is not a claim name (%s); write <namespace>/<claim>",
			ShareFromAnnotation, v, name, strings.Join(errs, "; "))
	}
	return Key{Namespace: ns, Name: name}, true, nil
}

// Access is how much a volume may be shared: none, read-only or
// read-write, in that order.
type Access int

const (
	NoAccess  Access = iota
	ReadOnly         // ReadOnlyMany
	ReadWrite        // ReadWriteMany
)

func (a Access) String() string {
	switch a {
	case ReadOnly:
		return string(v1.ReadOnlyMany)
	case ReadWrite:
		return string(v1.ReadWriteMany)
	}
	return "none"
}

// Allowed returns what the owner of source allows (SharingAnnotation), and
// an error naming a value that is neither ReadOnlyMany nor ReadWriteMany.
func Allowed(source *v1.PersistentVolumeClaim) (Access, error) {
	v, ok := source.Annotations[SharingAnnotation]
	if !ok {
		return NoAccess, nil
	}
	switch v1.PersistentVolumeAccessMode(strings.TrimSpace(v)) {
	case v1.ReadOnlyMany:
		return ReadOnly, nil
	case v1.ReadWriteMany:
		return ReadWrite, nil
	}
	return NoAccess, fmt.Errorf("annotation %s=%q is neither %s nor %s", SharingAnnotation, v, v1.ReadOnlyMany, v1.ReadWriteMany)
}

// modeAccess is what one access mode needs from a share; NoAccess for the
// single-node modes, which a volume mounted by many nodes cannot promise.
func modeAccess(m v1.PersistentVolumeAccessMode) Access {
	switch m {
	case v1.ReadOnlyMany:
		return ReadOnly
	case v1.ReadWriteMany:
		return ReadWrite
	}
	return NoAccess
}

// volumeAccess is the most a volume can be shared with, from its PV's
// access modes: ReadWriteMany allows both, ReadOnlyMany read-only, the
// single-node modes nothing.
func volumeAccess(modes []v1.PersistentVolumeAccessMode) Access {
	best := NoAccess
	for _, m := range modes {
		best = max(best, modeAccess(m))
	}
	return best
}

// onlyReadOnly reports whether every mode is ReadOnlyMany: the share is then
// mounted read-only (PV spec.csi.readOnly).
func onlyReadOnly(modes []v1.PersistentVolumeAccessMode) bool {
	for _, m := range modes {
		if m != v1.ReadOnlyMany {
			return false
		}
	}
	return len(modes) > 0
}

// SourceOf returns the source claim a subordinate PV names, and whether pv
// is a subordinate at all.
func SourceOf(pv *v1.PersistentVolume) (Key, bool) {
	v, ok := pv.Annotations[SharedFromAnnotation]
	if !ok {
		return Key{}, false
	}
	ns, name, _ := strings.Cut(v, "/")
	return Key{Namespace: ns, Name: name}, true
}

// IsSubordinate reports whether pv shares a volume another PV owns: it was
// made by Share, and deleting it must never delete the volume. Only writers
// of PVs (admins, controllers) can set the annotation.
func IsSubordinate(pv *v1.PersistentVolume) bool {
	_, ok := pv.Annotations[SharedFromAnnotation]
	return ok
}
