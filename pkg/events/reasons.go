// Package events holds the Event reasons the sidecar emits, in one place, so
// that users and alerts can rely on them, and the recorder that sends them on
// a client budget of its own.
package events

// Reasons on the claim. Messages say what to do; reasons say what happened.
const (
	// CrossNamespaceGateDisabled: the claim names a source in another
	// namespace but the sidecar runs without --feature-gates=CrossNamespaceVolumeDataSource=true.
	CrossNamespaceGateDisabled = "CrossNamespaceDataSourceDisabled"
	// ReferenceGrantMissing: no ReferenceGrant in the source namespace allows the reference.
	ReferenceGrantMissing = "ReferenceGrantMissing"
	// ReferenceGrantsUnavailable: grants cannot be read (CRD missing or RBAC forbids it).
	ReferenceGrantsUnavailable = "ReferenceGrantsUnavailable"
	// ReferenceGrantRevoked: the grant went away while the volume was being created;
	// what the driver created was deleted.
	ReferenceGrantRevoked = "ReferenceGrantRevoked"
	// ProvisionedFromSource: the volume was provisioned from a data source; the
	// message names the source and, across namespaces, the grant.
	ProvisionedFromSource = "ProvisionedFromDataSource"
	// ProvisioningFailed: the claim cannot be provisioned as it is, and no
	// retry changes that (spec.selector is set); the message says what to do.
	// The provision loop sends other failures under the same reason.
	ProvisioningFailed = "ProvisioningFailed"
	// ExternalPopulatorExpected (Normal): dataSourceRef names a kind this
	// sidecar does not provision from, so a volume populator is expected to
	// provision the claim. The reason is upstream's, "Provisioning", so that
	// filters written for upstream keep working.
	ExternalPopulatorExpected = "Provisioning"
	// DataSourceInvalid: the claim's spec.dataSourceRef can name no source
	// (a kind in the wrong case, apiGroup "core", a name no object can have);
	// the message says what is wrong. Sent once: the field cannot change.
	DataSourceInvalid = "DataSourceInvalid"
	// SnapshotHoldForbidden: RBAC does not let the sidecar hold the source
	// snapshot's VolumeSnapshotContent at Retain while it restores; the
	// restore goes on, unprotected against the snapshot's deletion. Sent once.
	SnapshotHoldForbidden = "SnapshotHoldForbidden"
)

// Reasons on the source object (in the source namespace).
const (
	// UsedAsDataSource: a claim (maybe in another namespace) was provisioned from this object.
	UsedAsDataSource = "UsedAsDataSource"
)

// Reasons of live sharing (pkg/sharing), on the claim that asks to share
// (provisioner.crossns.io/share-from), on the source claim, or on both.
const (
	// SharingDisabled: the claim asks to share a volume, but the sidecar runs
	// without --feature-gates=CrossNamespaceVolumeSharing=true.
	SharingDisabled = "CrossNamespaceVolumeSharingDisabled"
	// SharingNotAllowed: the source claim's owner has not opted it in
	// (annotation provisioner.crossns.io/sharing), or allows less than the
	// claim asks for (ReadOnlyMany, and the claim asks ReadWriteMany).
	SharingNotAllowed = "SharingNotAllowed"
	// ShareInvalid: the claim's share-from annotation or spec cannot share
	// anything (not <namespace>/<claim>, a data source or a selector too,
	// an access mode that is not multi-node); the message says what to change.
	ShareInvalid = "ShareInvalid"
	// ShareSourceNotReady: the source claim does not exist, is not Bound
	// yet, or is being deleted. The claim is retried when the source changes.
	ShareSourceNotReady = "ShareSourceNotReady"
	// ShareRefused: the source's volume cannot be shared with this claim
	// (another driver, not ReadWriteMany/ReadOnlyMany, Block against
	// Filesystem, smaller than the request, another VolumeAttributesClass);
	// the message says what to change.
	ShareRefused = "ShareRefused"
	// VolumeShared (Normal): on the claim, it is bound to the source's
	// volume (no copy); on the source claim, who shares it now.
	VolumeShared = "VolumeShared"
	// ShareRevoked (Warning, both claims): the owner removed the sharing
	// annotation or the grant; new shares are refused, but this existing
	// share keeps its volume until its claim is deleted.
	ShareRevoked = "ShareRevoked"
	// DeletionWaitsForShares: the source claim was deleted while claims
	// share its volume; it stays Terminating (soft-deleted) until the last
	// of them is gone, then its volume is reclaimed as usual.
	DeletionWaitsForShares = "DeletionWaitsForShares"
	// SharedVolumeExpansionRefused (Warning): a claim that shares a volume
	// asked for more storage; expanding it would resize the volume of every
	// claim sharing it, so it is refused. Expand the source claim instead.
	SharedVolumeExpansionRefused = "SharedVolumeExpansionRefused"
)
