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
