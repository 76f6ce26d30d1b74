// Package datasource turns a claim's dataSource/dataSourceRef (same or other
// namespace) into a CSI VolumeContentSource, with every check a source needs.
// It reads only informer caches and never talks to the CSI driver.
package datasource

import (
	v1 "k8s.io/api/core/v1"
)

const (
	// SnapshotGroup is the API group of VolumeSnapshot.
	SnapshotGroup = "snapshot.storage.k8s.io"
	// SnapshotKind is the kind of a VolumeSnapshot source.
	SnapshotKind = "VolumeSnapshot"
	// ClaimKind is the kind of a PersistentVolumeClaim (clone) source.
	ClaimKind = "PersistentVolumeClaim"
)

// Ref is the data source a claim names, normalised from dataSourceRef (which
// wins, as it is the superset) or the legacy dataSource field.
type Ref struct {
	Group     string
	Kind      string
	Namespace string
	Name      string
}

// RefOf returns the claim's data source and whether it has one. Namespace is
// the claim's own unless dataSourceRef names another.
func RefOf(claim *v1.PersistentVolumeClaim) (Ref, bool) {
	if r := claim.Spec.DataSourceRef; r != nil {
		ref := Ref{Kind: r.Kind, Name: r.Name, Namespace: claim.Namespace}
		if r.APIGroup != nil {
			ref.Group = *r.APIGroup
		}
		if r.Namespace != nil && *r.Namespace != "" {
			ref.Namespace = *r.Namespace
		}
		return ref, true
	}
	if r := claim.Spec.DataSource; r != nil {
		ref := Ref{Kind: r.Kind, Name: r.Name, Namespace: claim.Namespace}
		if r.APIGroup != nil {
			ref.Group = *r.APIGroup
		}
		return ref, true
	}
	return Ref{}, false
}

// IsSnapshot reports whether the reference names a VolumeSnapshot.
func (r Ref) IsSnapshot() bool { return r.Group == SnapshotGroup && r.Kind == SnapshotKind }

// IsClaim reports whether the reference names a PersistentVolumeClaim.
func (r Ref) IsClaim() bool { return r.Group == "" && r.Kind == ClaimKind }

// Handled reports whether this sidecar provisions from such a source. Other
// kinds belong to volume populators: nothing is resolved or protected for
// them, and the provisioner only tells the claim a populator is expected.
func (r Ref) Handled() bool { return r.IsSnapshot() || r.IsClaim() }

// CrossNamespace reports whether the source lives outside the claim's namespace.
func (r Ref) CrossNamespace(claim *v1.PersistentVolumeClaim) bool {
	return r.Namespace != claim.Namespace
}

// String names the source the way users write it: Kind namespace/name.
func (r Ref) String() string { return r.Kind + " " + r.Namespace + "/" + r.Name }

// Key names the source uniquely across namespaces, "Kind/namespace/name": the
// key of source protection and of in-flight records that hold the source.
func (r Ref) Key() string { return r.Kind + "/" + r.Namespace + "/" + r.Name }
