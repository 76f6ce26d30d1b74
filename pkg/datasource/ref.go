// Package datasource turns a claim's dataSource/dataSourceRef (same or other
// namespace) into a CSI VolumeContentSource, with every check a source needs.
// It reads only informer caches and never talks to the CSI driver.
package datasource

import (
	"fmt"
	"strings"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/crossns/external-provisioner/pkg/events"
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
	// Annotated: the claim names the source in DataSourceAnnotation.
	Annotated bool
	// invalid says why an annotation names no usable source ("" if it does).
	invalid string
}

// RefOf returns the claim's data source and whether it has one. Namespace is
// the claim's own unless dataSourceRef (or DataSourceAnnotation) names
// another.
func RefOf(claim *v1.PersistentVolumeClaim) (Ref, bool) {
	if ref, ok := annotationRef(claim); ok {
		return ref, true
	}
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

// recreate ends the message of every malformed reference: the field is
// immutable, so the only fix is a new claim.
const recreate = "; a claim's data source cannot be changed, so create the claim again with it corrected"

// Validate returns a Malformed *Error when the reference can name no source:
// its name or namespace is one no object can have, or it looks like a source
// this sidecar provisions from but is spelled wrong (kinds are
// case-sensitive, and the core group is "", not "core"). Such a claim would
// otherwise wait for ever, for a grant that can never match it or for a
// volume populator that does not exist. It reads nothing, so it may run
// before the grant is decided. Other kinds are left to volume populators, as
// upstream leaves them, and not judged. Validate returns nil for a usable
// reference.
func (r Ref) Validate() error {
	if r.Annotated {
		return r.validateAnnotated()
	}
	switch {
	case r.Kind == "":
		return malformed("spec.dataSourceRef names no kind: a VolumeSnapshot restore needs kind VolumeSnapshot and apiGroup %s, a clone kind %s", SnapshotGroup, ClaimKind)
	case r.Group == "core":
		return malformed("spec.dataSourceRef names kind %q in apiGroup \"core\", which does not exist: the core API group is written by leaving apiGroup out "+
			"(a %s source has no apiGroup)", r.Kind, ClaimKind)
	case r.Group == SnapshotGroup && r.Kind != SnapshotKind && strings.EqualFold(r.Kind, SnapshotKind):
		return malformed("spec.dataSourceRef names kind %q in apiGroup %s, which has no such kind: kinds are case-sensitive (did you mean %s)", r.Kind, SnapshotGroup, SnapshotKind)
	case !r.Handled():
		return nil // a volume populator's kind: its name is its business
	case r.Name == "":
		return malformed("spec.dataSourceRef names a %s without a name", r.Kind)
	}
	if errs := validation.IsDNS1123Subdomain(r.Name); len(errs) > 0 {
		return malformed("spec.dataSourceRef names %s %q, which is not a valid object name (%s), so no such %s can exist",
			r.Kind, r.Name, strings.Join(errs, "; "), r.Kind)
	}
	if errs := validation.IsDNS1123Label(r.Namespace); r.Namespace != "" && len(errs) > 0 {
		return malformed("spec.dataSourceRef names namespace %q, which is not a valid namespace name (%s)", r.Namespace, strings.Join(errs, "; "))
	}
	return nil
}

func malformed(format string, args ...any) *Error {
	return &Error{Kind: Malformed, Reason: events.DataSourceInvalid, Message: fmt.Sprintf(format, args...) + recreate}
}

// String names the source the way users write it: Kind namespace/name.
func (r Ref) String() string { return r.Kind + " " + r.Namespace + "/" + r.Name }

// Key names the source uniquely across namespaces, "Kind/namespace/name": the
// key of source protection and of in-flight records that hold the source.
func (r Ref) Key() string { return r.Kind + "/" + r.Namespace + "/" + r.Name }
