package datasource

import (
	"fmt"
	"strings"

	v1 "k8s.io/api/core/v1"

	"github.com/crossns/external-provisioner/pkg/events"
)

// DataSourceAnnotation names a claim's data source for clusters whose
// kube-apiserver runs without the alpha CrossNamespaceVolumeDataSource gate
// (managed clusters, typically) and so drops spec.dataSourceRef.namespace.
// Its value is "<Kind>.<group>/<namespace>/<name>", the group left out for
// core kinds:
//
//	VolumeSnapshot.snapshot.storage.k8s.io/prod/nightly
//	PersistentVolumeClaim/prod/data
//
// With the sidecar's CrossNamespaceVolumeDataSource gate on, such a claim is
// provisioned exactly as one with spec.dataSourceRef.namespace: the same
// grant check, protection, Events, metrics and revocation rules. A claim that
// sets both the annotation and spec.dataSource(Ref) is refused. Unlike the
// spec fields the annotation can be edited; each attempt reads it anew, and
// a CreateVolume already recorded in flight is repeated as it was recorded.
const DataSourceAnnotation = "provisioner.crossns.io/data-source"

// annotationRef returns the reference the claim's DataSourceAnnotation names,
// and whether the claim has the annotation. A value that cannot be parsed,
// or one set next to spec.dataSource(Ref), gives a Ref whose Validate
// returns a Malformed *Error saying what to change.
func annotationRef(claim *v1.PersistentVolumeClaim) (Ref, bool) {
	value, ok := claim.Annotations[DataSourceAnnotation]
	if !ok {
		return Ref{}, false
	}
	ref := Ref{Namespace: claim.Namespace, Annotated: true}
	if claim.Spec.DataSourceRef != nil || claim.Spec.DataSource != nil {
		ref.invalid = fmt.Sprintf("the claim names a data source both in annotation %s and in spec.dataSource/dataSourceRef: "+
			"remove the annotation (or create the claim again without the spec fields)", DataSourceAnnotation)
		return ref, true
	}
	parts := strings.Split(value, "/")
	if len(parts) != 3 || parts[0] == "" || parts[1] == "" || parts[2] == "" {
		ref.invalid = fmt.Sprintf("annotation %s is %q, which is not <Kind>.<group>/<namespace>/<name> "+
			"(e.g. VolumeSnapshot.%s/prod/nightly or %s/prod/data): correct the annotation", DataSourceAnnotation, value, SnapshotGroup, ClaimKind)
		return ref, true
	}
	kind, group, _ := strings.Cut(parts[0], ".")
	ref.Kind, ref.Group, ref.Namespace, ref.Name = kind, group, parts[1], parts[2]
	return ref, true
}

// annotationError is the Malformed *Error of an unusable annotation: unlike
// the immutable spec fields, the fix is an edit of the annotation.
func annotationError(msg string) *Error {
	return &Error{Kind: Malformed, Reason: events.DataSourceInvalid, Message: msg}
}

// validateAnnotated is Validate for a reference from DataSourceAnnotation:
// the same rules as for spec.dataSourceRef, plus only the kinds this sidecar
// provisions from (no volume populator reads the annotation), with messages
// that name the annotation and say to edit it.
func (r Ref) validateAnnotated() error {
	if r.invalid != "" {
		return annotationError(r.invalid)
	}
	if r.Group == "core" || !r.Handled() {
		return annotationError(fmt.Sprintf("annotation %s names kind %q in apiGroup %q, but it can name only a VolumeSnapshot "+
			"(VolumeSnapshot.%s/<namespace>/<name>) or a PersistentVolumeClaim (%s/<namespace>/<name>, no group): correct the annotation",
			DataSourceAnnotation, r.Kind, r.Group, SnapshotGroup, ClaimKind))
	}
	spec := r
	spec.Annotated = false
	err := spec.Validate()
	de, ok := AsError(err)
	if !ok {
		return err
	}
	msg := strings.Replace(de.Message, "spec.dataSourceRef", "annotation "+DataSourceAnnotation, 1)
	return annotationError(strings.TrimSuffix(msg, recreate) + ": correct the annotation")
}
