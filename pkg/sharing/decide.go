package sharing

import (
	"errors"
	"fmt"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/utils/ptr"

	"github.com/crossns/external-provisioner/pkg/datasource"
	"github.com/crossns/external-provisioner/pkg/events"
	"github.com/crossns/external-provisioner/pkg/referencegrant"
)

// decision is an allowed share: the source claim, the PV that owns its
// volume, the grant that allowed it across namespaces ("" within one), and
// what the owner allows.
type decision struct {
	from    Key
	source  *v1.PersistentVolumeClaim
	volume  *v1.PersistentVolume
	grant   string
	allowed Access
}

// decide says whether claim may share the volume it names, from the caches.
// The order is the rule's: what the claim itself asks (fields that cannot
// change), the gate, then the grant — decided before anything in the source's
// namespace is read, so a claim without a grant learns nothing about what
// exists there — then the owner's annotation, then the source's state.
// Every refusal is an *Error whose message says what to change and who can;
// anything else is transient (a cache read failed).
func (s *Sharer) decide(claim *v1.PersistentVolumeClaim) (*decision, error) {
	from, ok, err := ShareFrom(claim)
	if !ok {
		return nil, fmt.Errorf("claim %s/%s has no %s annotation", claim.Namespace, claim.Name, ShareFromAnnotation)
	}
	if err != nil {
		// The annotation can be edited: an edit puts the claim back.
		return nil, refused(events.ShareInvalid, "share_invalid", "%v", err)
	}
	if err := checkClaim(claim, from); err != nil {
		return nil, err
	}
	if !s.cfg.Enabled {
		return nil, refused(events.SharingDisabled, "share_disabled",
			"claim asks to share the volume of %s (annotation %s), but this csi-provisioner runs without "+
				"--feature-gates=CrossNamespaceVolumeSharing=true; ask the cluster admin to enable it, or remove the annotation "+
				"and create the claim again to get a volume of its own", from, ShareFromAnnotation)
	}
	grant, err := s.authorize(claim, from)
	if err != nil {
		return nil, err
	}
	source, err := s.claims.PersistentVolumeClaims(from.Namespace).Get(from.Name)
	if apierrors.IsNotFound(err) {
		return nil, refused(events.ShareSourceNotReady, "share_source_not_ready",
			"PersistentVolumeClaim %s not found; the claim is tried again when it appears", from)
	}
	if err != nil {
		return nil, fmt.Errorf("reading PersistentVolumeClaim %s: %w", from, err)
	}
	allowed, err := Allowed(source)
	if err != nil {
		return nil, refused(events.SharingNotAllowed, "share_not_allowed",
			"PersistentVolumeClaim %s is not shared: %v; its owner must set it to %s or %s", from, err, v1.ReadOnlyMany, v1.ReadWriteMany)
	}
	if allowed == NoAccess {
		return nil, refused(events.SharingNotAllowed, "share_not_allowed",
			"PersistentVolumeClaim %s is not shared: its owner must annotate it %s=%s (or %s) to let other claims use its volume; %s",
			from, SharingAnnotation, v1.ReadOnlyMany, v1.ReadWriteMany, grantNote(grant))
	}
	if want := claimAccess(claim); want > allowed {
		return nil, refused(events.SharingNotAllowed, "share_not_allowed",
			"the owner of PersistentVolumeClaim %s allows sharing it %s (annotation %s), and this claim asks for %s: "+
				"create the claim again with accessModes [%s], or ask the owner to allow %s",
			from, allowed, SharingAnnotation, want, v1.ReadOnlyMany, v1.ReadWriteMany)
	}
	if source.DeletionTimestamp != nil {
		return nil, refused(events.ShareSourceNotReady, "share_source_not_ready",
			"PersistentVolumeClaim %s is being deleted: its volume can no longer be shared", from)
	}
	if source.Status.Phase != v1.ClaimBound || source.Spec.VolumeName == "" {
		return nil, refused(events.ShareSourceNotReady, "share_source_not_ready",
			"PersistentVolumeClaim %s is %s, not Bound: a volume is shared once it exists; the claim is tried again when the source is Bound",
			from, phase(source))
	}
	pv, err := s.volumes.Get(source.Spec.VolumeName)
	if apierrors.IsNotFound(err) {
		return nil, refused(events.ShareSourceNotReady, "share_source_not_ready",
			"PersistentVolume %q of PersistentVolumeClaim %s not found", source.Spec.VolumeName, from)
	}
	if err != nil {
		return nil, fmt.Errorf("reading PersistentVolume %q of %s: %w", source.Spec.VolumeName, from, err)
	}
	if err := s.checkVolume(claim, from, source, pv, allowed); err != nil {
		return nil, err
	}
	return &decision{from: from, source: source, volume: pv, grant: grant, allowed: allowed}, nil
}

// checkClaim refuses what the claim asks and can never get as it is: a
// volume of its own content (a data source), a label selector, a
// single-node access mode. Those fields cannot change.
func checkClaim(claim *v1.PersistentVolumeClaim, from Key) error {
	recreate := "; create the claim again without it"
	if _, ok := claim.Annotations[datasource.DataSourceAnnotation]; ok {
		return refused(events.ShareInvalid, "share_invalid", "claim asks to share the volume of %s and also names a data source "+
			"(annotation %s): a shared volume has its source's content, not a copy of another's; remove one of the two annotations",
			from, datasource.DataSourceAnnotation)
	}
	switch {
	case claim.Spec.DataSource != nil || claim.Spec.DataSourceRef != nil:
		return unsupported(events.ShareInvalid, "claim asks to share the volume of %s and also names a data source: a shared volume has "+
			"its source's content, not a copy of another's%s (or without annotation %s, to get a copy)", from, recreate, ShareFromAnnotation)
	case claim.Spec.Selector != nil:
		return unsupported(events.ShareInvalid, "claim asks to share the volume of %s and has spec.selector: a shared volume is chosen by "+
			"the annotation, not by labels%s", from, recreate)
	case len(claim.Spec.AccessModes) == 0:
		return unsupported(events.ShareInvalid, "claim asks to share the volume of %s without access modes: ask for %s or %s",
			from, v1.ReadOnlyMany, v1.ReadWriteMany)
	}
	for _, m := range claim.Spec.AccessModes {
		if modeAccess(m) == NoAccess {
			return unsupported(events.ShareInvalid, "claim asks to share the volume of %s with access mode %s: a shared volume is "+
				"mounted by many nodes, so a claim sharing it asks for %s or %s; create the claim again with one of them",
				from, m, v1.ReadOnlyMany, v1.ReadWriteMany)
		}
	}
	return nil
}

// checkVolume refuses a source volume this claim cannot share: of another
// driver, not multi-node, of another volume mode, smaller than asked, with
// another VolumeAttributesClass, or itself a share.
func (s *Sharer) checkVolume(claim *v1.PersistentVolumeClaim, from Key, source *v1.PersistentVolumeClaim, pv *v1.PersistentVolume, allowed Access) error {
	if back := pv.Spec.ClaimRef; back == nil || back.Namespace != source.Namespace || back.Name != source.Name ||
		(back.UID != "" && back.UID != source.UID) {
		return refused(events.ShareSourceNotReady, "share_source_not_ready",
			"PersistentVolume %q is not bound to PersistentVolumeClaim %s", pv.Name, from)
	}
	class := ptr.Deref(claim.Spec.StorageClassName, "")
	if pv.Spec.CSI == nil || pv.Spec.CSI.Driver != s.cfg.DriverName {
		driver := "an in-tree plugin"
		if pv.Spec.CSI != nil {
			driver = fmt.Sprintf("CSI driver %q", pv.Spec.CSI.Driver)
		}
		return refused(events.ShareRefused, "share_refused",
			"the volume of PersistentVolumeClaim %s belongs to %s, and StorageClass %q is of driver %q: a share is the same volume, "+
				"so it must be asked for with a StorageClass of the source's driver; create the claim again with one", from, driver, class, s.cfg.DriverName)
	}
	if orig, ok := SourceOf(pv); ok {
		return refused(events.ShareRefused, "share_refused",
			"PersistentVolumeClaim %s itself shares the volume of %s: share from %s instead (annotation %s=%s)", from, orig, orig, ShareFromAnnotation, orig)
	}
	can := volumeAccess(pv.Spec.AccessModes)
	if can == NoAccess {
		return refused(events.ShareRefused, "share_refused",
			"the volume of PersistentVolumeClaim %s is %v: only a volume that many nodes may mount (%s or %s) can be shared; "+
				"its owner can make a copy available instead (a clone: spec.dataSourceRef)", from, pv.Spec.AccessModes, v1.ReadWriteMany, v1.ReadOnlyMany)
	}
	if want := claimAccess(claim); want > can {
		return refused(events.ShareRefused, "share_refused",
			"the volume of PersistentVolumeClaim %s can be mounted %v, and this claim asks for %s: create the claim again with accessModes [%s]",
			from, pv.Spec.AccessModes, want, min(can, allowed))
	}
	if have, want := modeOf(pv.Spec.VolumeMode), modeOf(claim.Spec.VolumeMode); have != want {
		return refused(events.ShareRefused, "share_refused",
			"the volume of PersistentVolumeClaim %s is a %s volume and this claim asks for %s: create the claim again with volumeMode: %s",
			from, have, want, have)
	}
	size := pv.Spec.Capacity[v1.ResourceStorage]
	if req, ok := claim.Spec.Resources.Requests[v1.ResourceStorage]; ok && req.Cmp(size) > 0 {
		return refused(events.ShareRefused, "share_refused",
			"this claim asks for %s and the volume of PersistentVolumeClaim %s has %s: a share cannot be larger than its source; "+
				"create the claim again asking for at most %s (or ask the owner to expand the source)", req.String(), from, size.String(), size.String())
	}
	if vac := claim.Spec.VolumeAttributesClassName; vac != nil && ptr.Deref(pv.Spec.VolumeAttributesClassName, "") != *vac {
		return refused(events.ShareRefused, "share_refused",
			"this claim names VolumeAttributesClass %q and the volume of PersistentVolumeClaim %s has %q: a share has its source's attributes; "+
				"create the claim again without spec.volumeAttributesClassName", *vac, from, ptr.Deref(pv.Spec.VolumeAttributesClassName, ""))
	}
	return nil
}

// authorize decides the gate's other half: a claim in another namespace
// than its source needs a grant there (KEP-3294's shape, for the source
// claim); within one namespace the annotation alone decides. It returns the
// grant's name.
func (s *Sharer) authorize(claim *v1.PersistentVolumeClaim, from Key) (string, error) {
	if from.Namespace == claim.Namespace {
		return "", nil
	}
	ref := grantRef(claim.Namespace, from)
	if s.cfg.Grants == nil {
		return "", &Error{Kind: Refused, Reason: events.ReferenceGrantsUnavailable, Denial: "share_grants_unavailable", Undecided: true,
			Message: fmt.Sprintf("cannot decide whether this claim may share the volume of %s: ReferenceGrants are not watched", from)}
	}
	d, err := s.cfg.Grants.Check(ref)
	if errors.Is(err, referencegrant.ErrUnavailable) {
		return "", &Error{Kind: Refused, Reason: events.ReferenceGrantsUnavailable, Denial: "share_grants_unavailable", Undecided: true,
			Message: fmt.Sprintf("cannot decide whether this claim may share the volume of %s: %v; the claim is tried again as soon as "+
				"ReferenceGrants can be read (install the gateway.networking.k8s.io ReferenceGrant CRD and let the provisioner's "+
				"service account list and watch referencegrants)", from, err)}
	}
	if err != nil {
		return "", fmt.Errorf("checking ReferenceGrants for %s: %w", from, err)
	}
	if !d.Allowed {
		return "", refused(events.ReferenceGrantMissing, "share_no_grant",
			"no ReferenceGrant in namespace %q allows PersistentVolumeClaims from %q to use PersistentVolumeClaim %q; to share its volume, "+
				"the owner of %q creates %s and annotates the claim %s=%s (or %s): both are needed",
			from.Namespace, claim.Namespace, from.Name, from.Namespace, referencegrant.Describe(ref), SharingAnnotation, v1.ReadOnlyMany, v1.ReadWriteMany)
	}
	return d.Grant, nil
}

// grantRef is the reference a grant must allow for a claim in ns to share
// the source claim from.
func grantRef(ns string, from Key) referencegrant.Reference {
	return referencegrant.Reference{
		FromGroup: "", FromKind: ClaimKind, FromNamespace: ns,
		ToGroup: "", ToKind: ClaimKind, ToNamespace: from.Namespace, ToName: from.Name,
	}
}

// grantNote tells the owner that a grant alone does not share: it allows
// clones.
func grantNote(grant string) string {
	if grant == "" {
		return "within one namespace the annotation alone decides"
	}
	return fmt.Sprintf("ReferenceGrant %q allows clones of it, and live sharing needs the annotation as well", grant)
}

// claimAccess is the most any of the claim's access modes needs.
func claimAccess(claim *v1.PersistentVolumeClaim) Access {
	want := NoAccess
	for _, m := range claim.Spec.AccessModes {
		want = max(want, modeAccess(m))
	}
	return want
}

// permits reports whether the owner's annotation and the grant still allow
// a share a subordinate of consumerNS (with modes) has; why says what was
// revoked. undecided: grants cannot be read. source nil: the source claim
// is gone, which revokes nothing by itself.
func (s *Sharer) permits(consumerNS string, modes []v1.PersistentVolumeAccessMode, source *v1.PersistentVolumeClaim, from Key) (ok, undecided bool, why string) {
	if consumerNS != from.Namespace {
		if s.cfg.Grants == nil {
			return false, true, ""
		}
		d, err := s.cfg.Grants.Check(grantRef(consumerNS, from))
		if err != nil {
			return false, true, ""
		}
		if !d.Allowed {
			return false, false, fmt.Sprintf("no ReferenceGrant in namespace %q allows PersistentVolumeClaims from %q to use it any more", from.Namespace, consumerNS)
		}
	}
	if source == nil {
		return true, false, ""
	}
	allowed, _ := Allowed(source)
	want := NoAccess
	for _, m := range modes {
		want = max(want, modeAccess(m))
	}
	switch {
	case allowed == NoAccess:
		return false, false, fmt.Sprintf("annotation %s was removed from %s", SharingAnnotation, from)
	case want > allowed:
		return false, false, fmt.Sprintf("%s now allows only %s (annotation %s)", from, allowed, SharingAnnotation)
	}
	return true, false, ""
}

func phase(c *v1.PersistentVolumeClaim) string {
	if c.Status.Phase == "" {
		return string(v1.ClaimPending)
	}
	return string(c.Status.Phase)
}

// modeOf is the volume mode, Filesystem when unset (the API default).
func modeOf(m *v1.PersistentVolumeMode) v1.PersistentVolumeMode {
	if m == nil {
		return v1.PersistentVolumeFilesystem
	}
	return *m
}
