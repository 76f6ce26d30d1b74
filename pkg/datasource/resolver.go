package datasource

import (
	"errors"
	"fmt"
	"slices"
	"strconv"

	"github.com/container-storage-interface/spec/lib/go/csi"
	snapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	snapshotlisters "github.com/kubernetes-csi/external-snapshotter/client/v8/listers/volumesnapshot/v1"
	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	corelisters "k8s.io/client-go/listers/core/v1"

	"github.com/crossns/external-provisioner/pkg/events"
	"github.com/crossns/external-provisioner/pkg/referencegrant"
	"github.com/crossns/external-provisioner/pkg/snapshotapi"
)

// AllowVolumeModeChangeAnnotation on a VolumeSnapshotContent lets a snapshot of
// a Filesystem volume be restored as Block (or the reverse) when the
// conversion guard is on. Only someone who can edit contents (an admin) sets it.
const AllowVolumeModeChangeAnnotation = "snapshot.storage.kubernetes.io/allow-volume-mode-change"

// SnapshotControllerSourceFinalizer is the stock snapshot-controller's
// finalizer on a VolumeSnapshot that a Pending claim of its own namespace
// restores from (spec.dataSource): while such a claim waits, the controller
// keeps the snapshot and its content, also when the snapshot's deletion was
// requested. Not the sidecar's protection finalizer (pkg/protection).
const SnapshotControllerSourceFinalizer = "snapshot.storage.kubernetes.io/volumesnapshot-as-source-protection"

// Request describes the volume being provisioned, as far as a source cares.
type Request struct {
	// Bytes is the capacity the claim asks for.
	Bytes int64
	// Mode is the claim's volume mode (Filesystem when unset).
	Mode v1.PersistentVolumeMode
}

// Source is a resolved, checked data source.
type Source struct {
	Ref
	// CrossNamespace is true when the source is in another namespace than the claim.
	CrossNamespace bool
	// Grant names the ReferenceGrant (in Ref.Namespace) that allowed a
	// cross-namespace reference.
	Grant string
	// Content is what CreateVolume is given.
	Content *csi.VolumeContentSource
	// Object is the source VolumeSnapshot or PersistentVolumeClaim, for Events
	// and protection.
	Object any
}

// SnapshotCaches hands out the VolumeSnapshot and VolumeSnapshotContent
// caches, which exist only while the snapshot API is served (see
// pkg/snapshotapi): the resolver asks for them on every snapshot restore
// instead of holding listers that could be missing.
type SnapshotCaches interface {
	// Listers returns the listers once their caches have synced. Until then
	// the error wraps snapshotapi.ErrNotServed (the API is not served, with
	// what to do) or says the caches are still syncing.
	Listers() (snapshotlisters.VolumeSnapshotLister, snapshotlisters.VolumeSnapshotContentLister, error)
}

var _ SnapshotCaches = (*snapshotapi.Watcher)(nil)

// Resolver resolves and checks data sources from informer caches.
type Resolver struct {
	// DriverName is the CSI driver this sidecar serves; sources must belong to it.
	DriverName string
	// CrossNamespace is the CrossNamespaceVolumeDataSource gate.
	CrossNamespace bool
	// PreventVolumeModeConversion guards snapshot restores against mode changes.
	PreventVolumeModeConversion bool
	// Grants decides cross-namespace references; nil when the gate is off.
	Grants referencegrant.Checker
	// Snapshots gives the snapshot caches while the snapshot API is served.
	Snapshots SnapshotCaches
	// Claims and Volumes are informer-backed listers.
	Claims  corelisters.PersistentVolumeClaimLister
	Volumes corelisters.PersistentVolumeLister
	// Held lets claims already in flight use a source being deleted while
	// protection holds it; nil: a source being deleted is always refused.
	Held Holder
}

// Resolve checks the claim's data source and returns what CreateVolume needs.
// It returns (nil, nil) when the claim has no source this sidecar handles.
// Failures a user can fix are *Error; anything else is transient. A
// malformed reference (Ref.Validate) is refused before anything is read.
func (r *Resolver) Resolve(claim *v1.PersistentVolumeClaim, req Request) (*Source, error) {
	ref, ok := RefOf(claim)
	if !ok {
		return nil, nil
	}
	if err := ref.Validate(); err != nil {
		return nil, err
	}
	if !ref.Handled() {
		return nil, nil
	}
	src := &Source{Ref: ref, CrossNamespace: ref.CrossNamespace(claim)}
	if src.CrossNamespace {
		// The grant is checked before anything in the other namespace is read,
		// so a denied claim learns nothing about what exists there.
		grant, err := r.Authorize(claim, ref)
		if err != nil {
			return nil, err
		}
		src.Grant = grant
	}
	var err error
	if ref.IsSnapshot() {
		err = r.resolveSnapshot(claim, src, req)
	} else {
		err = r.resolveClaim(claim, src, req)
	}
	if err != nil {
		return nil, err
	}
	return src, nil
}

// Authorize decides a cross-namespace reference and returns the name of the
// grant that allows it. It is cheap (an index lookup) and is called again
// right before CreateVolume, so a revoked grant is honoured at the last moment.
func (r *Resolver) Authorize(claim *v1.PersistentVolumeClaim, ref Ref) (string, error) {
	if !r.CrossNamespace || r.Grants == nil {
		return "", &Error{Kind: Denied, Reason: events.CrossNamespaceGateDisabled, DenialReason: "gate_disabled",
			Message: fmt.Sprintf("claim names %s in another namespace, but this csi-provisioner runs without "+
				"--feature-gates=CrossNamespaceVolumeDataSource=true; ask the cluster admin to enable it on the sidecar "+
				"(and on kube-apiserver and kube-controller-manager)", ref)}
	}
	gref := referencegrant.Reference{
		FromGroup: "", FromKind: ClaimKind, FromNamespace: claim.Namespace,
		ToGroup: ref.Group, ToKind: ref.Kind, ToNamespace: ref.Namespace, ToName: ref.Name,
	}
	d, err := r.Grants.Check(gref)
	if err != nil {
		if errors.Is(err, referencegrant.ErrUnavailable) {
			return "", &Error{Kind: Denied, Reason: events.ReferenceGrantsUnavailable, DenialReason: "grants_unavailable", Undecided: true,
				Message: fmt.Sprintf("cannot decide whether %s may be used: %v; the claim is retried as soon as "+
					"ReferenceGrants can be read (install the gateway.networking.k8s.io ReferenceGrant CRD and let "+
					"the provisioner's service account list and watch referencegrants)", ref, err)}
		}
		return "", fmt.Errorf("checking ReferenceGrants for %s: %w", ref, err)
	}
	if !d.Allowed {
		return "", &Error{Kind: Denied, Reason: events.ReferenceGrantMissing, DenialReason: "no_grant",
			Message: fmt.Sprintf("no ReferenceGrant in namespace %q allows PersistentVolumeClaims from %q to use %s %q; "+
				"to allow it, the owner of %q creates %s", ref.Namespace, claim.Namespace, ref.Kind, ref.Name,
				ref.Namespace, referencegrant.Describe(gref))}
	}
	return d.Grant, nil
}

func (r *Resolver) resolveSnapshot(claim *v1.PersistentVolumeClaim, src *Source, req Request) error {
	snapshots, contents, err := r.Snapshots.Listers()
	if errors.Is(err, snapshotapi.ErrNotServed) {
		// Retried with backoff: installing the CRDs needs no restart.
		return invalid(reasonSnapshotAPINotServed, "cannot restore %s: %v", src.Ref, err)
	}
	if err != nil {
		return fmt.Errorf("reading %s: %w", src.Ref, err)
	}
	snap, err := snapshots.VolumeSnapshots(src.Namespace).Get(src.Name)
	if err != nil && apierrors.IsNotFound(err) {
		return invalid(reasonSourceNotFound, "%s not found", src.Ref)
	}
	if err != nil {
		return fmt.Errorf("reading %s: %w", src.Ref, err)
	}
	if !r.usableWhileDeleted(claim, snap) {
		return invalid(reasonSourceBeingDeleted, "%s is being deleted", src.Ref)
	}
	if snap.Status == nil || snap.Status.BoundVolumeSnapshotContentName == nil || *snap.Status.BoundVolumeSnapshotContentName == "" {
		return invalid(reasonSourceNotReady, "%s is not bound to a VolumeSnapshotContent yet", src.Ref)
	}
	if snap.Status.ReadyToUse == nil || !*snap.Status.ReadyToUse {
		return invalid(reasonSourceNotReady, "%s is not ready to use yet", src.Ref)
	}
	contentName := *snap.Status.BoundVolumeSnapshotContentName
	content, err := contents.Get(contentName)
	if err != nil && apierrors.IsNotFound(err) {
		return invalid(reasonSourceNotReady, "VolumeSnapshotContent %q of %s not found", contentName, src.Ref)
	}
	if err != nil {
		return fmt.Errorf("reading VolumeSnapshotContent %q of %s: %w", contentName, src.Ref, err)
	}
	// A content that does not point back at this snapshot may be someone
	// else's: following it would hand out data the grant never covered.
	back := content.Spec.VolumeSnapshotRef
	if back.Namespace != snap.Namespace || back.Name != snap.Name || (back.UID != "" && back.UID != snap.UID) {
		return invalid(reasonContentNotBoundBack, "VolumeSnapshotContent %q is not bound to %s", contentName, src.Ref)
	}
	if content.Spec.Driver != r.DriverName {
		return invalid(reasonDriverMismatch, "%s was taken by driver %q, not %q; restore it with a StorageClass of that driver",
			src.Ref, content.Spec.Driver, r.DriverName)
	}
	if content.Status == nil || content.Status.SnapshotHandle == nil || *content.Status.SnapshotHandle == "" {
		return invalid(reasonSourceNotReady, "VolumeSnapshotContent %q of %s has no snapshot handle yet", contentName, src.Ref)
	}
	if size := snap.Status.RestoreSize; size != nil && size.Value() > req.Bytes {
		return invalid(reasonSourceTooLarge, "requested size %s is smaller than the restore size %s of %s; ask for at least %s",
			quantity(req.Bytes), size.String(), src.Ref, size.String())
	}
	if err := r.checkSnapshotMode(src, content, req); err != nil {
		return err
	}
	src.Content = &csi.VolumeContentSource{Type: &csi.VolumeContentSource_Snapshot{
		Snapshot: &csi.VolumeContentSource_SnapshotSource{SnapshotId: *content.Status.SnapshotHandle},
	}}
	src.Object = snap
	return nil
}

// checkSnapshotMode refuses to restore a snapshot into a different volume mode
// unless an admin allowed it on the content: a Block restore of a Filesystem
// snapshot would expose raw blocks of a file system the user may not own.
func (r *Resolver) checkSnapshotMode(src *Source, content *snapshotv1.VolumeSnapshotContent, req Request) error {
	if !r.PreventVolumeModeConversion || content.Spec.SourceVolumeMode == nil {
		return nil
	}
	if *content.Spec.SourceVolumeMode == req.Mode {
		return nil
	}
	if allowed, _ := strconv.ParseBool(content.Annotations[AllowVolumeModeChangeAnnotation]); allowed {
		return nil
	}
	return invalid(reasonVolumeModeMismatch, "%s was taken from a %s volume and the claim asks for %s; "+
		"an admin may allow it with annotation %s=true on VolumeSnapshotContent %q",
		src.Ref, *content.Spec.SourceVolumeMode, req.Mode, AllowVolumeModeChangeAnnotation, content.Name)
}

func (r *Resolver) resolveClaim(claim *v1.PersistentVolumeClaim, src *Source, req Request) error {
	if !src.CrossNamespace && src.Name == claim.Name {
		return invalid(reasonSourceNotFound, "a claim cannot be cloned from itself")
	}
	source, err := r.Claims.PersistentVolumeClaims(src.Namespace).Get(src.Name)
	if err != nil && apierrors.IsNotFound(err) {
		return invalid(reasonSourceNotFound, "%s not found", src.Ref)
	}
	if err != nil {
		return fmt.Errorf("reading %s: %w", src.Ref, err)
	}
	if !r.usableWhileDeleted(claim, source) {
		return invalid(reasonSourceBeingDeleted, "%s is being deleted", src.Ref)
	}
	if source.Status.Phase != v1.ClaimBound || source.Spec.VolumeName == "" {
		return invalid(reasonSourceNotReady, "%s is not bound yet", src.Ref)
	}
	pv, err := r.Volumes.Get(source.Spec.VolumeName)
	if err != nil && apierrors.IsNotFound(err) {
		return invalid(reasonSourceNotReady, "PersistentVolume %q of %s not found", source.Spec.VolumeName, src.Ref)
	}
	if err != nil {
		return fmt.Errorf("reading PersistentVolume %q of %s: %w", source.Spec.VolumeName, src.Ref, err)
	}
	// As with snapshot contents: a volume that is not bound back to the
	// source claim may be someone else's, and the grant covers only the claim.
	if back := pv.Spec.ClaimRef; back == nil || back.Namespace != source.Namespace || back.Name != source.Name ||
		(back.UID != "" && back.UID != source.UID) {
		return invalid(reasonContentNotBoundBack, "PersistentVolume %q is not bound to %s", pv.Name, src.Ref)
	}
	if pv.Spec.CSI == nil || pv.Spec.CSI.Driver != r.DriverName {
		return invalid(reasonDriverMismatch, "%s is not a volume of driver %q; clone it with a StorageClass of its own driver",
			src.Ref, r.DriverName)
	}
	if size, ok := source.Spec.Resources.Requests[v1.ResourceStorage]; ok && size.Value() > req.Bytes {
		return invalid(reasonSourceTooLarge, "requested size %s is smaller than the size %s of %s; ask for at least %s",
			quantity(req.Bytes), size.String(), src.Ref, size.String())
	}
	if mode := ModeOf(source.Spec.VolumeMode); mode != req.Mode {
		return invalid(reasonVolumeModeMismatch, "%s is a %s volume and the claim asks for %s; a clone keeps the source's volume mode",
			src.Ref, mode, req.Mode)
	}
	src.Content = &csi.VolumeContentSource{Type: &csi.VolumeContentSource_Volume{
		Volume: &csi.VolumeContentSource_VolumeSource{VolumeId: pv.Spec.CSI.VolumeHandle},
	}}
	src.Object = source
	return nil
}

// Holder tells whether source protection holds a source object
// (pkg/protection: its finalizer is on it).
type Holder interface {
	Holds(source metav1.Object) bool
}

// usableWhileDeleted: a source whose deletion was requested is refused,
// unless protection still holds it for claims that were already waiting on
// it when the delete came (ClaimedBeforeDelete): refusing those would leave
// claim and source stuck for ever, each waiting for the other. Claims made
// after the delete cannot extend it.
func (r *Resolver) usableWhileDeleted(claim *v1.PersistentVolumeClaim, source metav1.Object) bool {
	deleted := source.GetDeletionTimestamp()
	if deleted == nil {
		return true
	}
	if !ClaimedBeforeDelete(claim, deleted) {
		return false
	}
	return (r.Held != nil && r.Held.Holds(source)) || heldBySnapshotController(claim, source)
}

// heldBySnapshotController reports whether the stock snapshot-controller
// holds source, a VolumeSnapshot being deleted, for claim: a restore of the
// snapshot's own namespace (spec.dataSource) while its
// SnapshotControllerSourceFinalizer is on the snapshot. That is the guarantee
// protection gives, for a claim the sidecar did not get to protect before
// the delete (no finalizer can be added to an object being deleted): refusing
// it would leave both stuck, since the controller keeps the snapshot for as
// long as the claim waits (found by the soak harness).
func heldBySnapshotController(claim *v1.PersistentVolumeClaim, source metav1.Object) bool {
	snap, ok := source.(*snapshotv1.VolumeSnapshot)
	ds := claim.Spec.DataSource
	return ok && snap.Namespace == claim.Namespace && ds != nil && ds.APIGroup != nil && *ds.APIGroup == SnapshotGroup &&
		ds.Kind == SnapshotKind && ds.Name == snap.Name && slices.Contains(snap.Finalizers, SnapshotControllerSourceFinalizer)
}

// ClaimedBeforeDelete reports whether claim was made before its source's
// deletion was requested at deleted (nil: not requested). Only such a claim
// may still use a source being deleted, and so only such a claim may keep
// holding it (pkg/protection): a claim made later is refused, and holding the
// source for it would keep the owner's delete waiting for ever. Timestamps
// have whole seconds, so a claim made in the second of the delete counts as
// made before it (found by the soak harness: a restore whose CreateVolume was
// already running was refused, and claim and snapshot stayed stuck).
func ClaimedBeforeDelete(claim *v1.PersistentVolumeClaim, deleted *metav1.Time) bool {
	return deleted == nil || !deleted.Before(&claim.CreationTimestamp)
}

// ModeOf returns the volume mode, Filesystem when unset (the API default).
func ModeOf(m *v1.PersistentVolumeMode) v1.PersistentVolumeMode {
	if m == nil {
		return v1.PersistentVolumeFilesystem
	}
	return *m
}

func quantity(bytes int64) string { return resource.NewQuantity(bytes, resource.BinarySI).String() }
