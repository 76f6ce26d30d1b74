package datasource

import (
	"errors"
	"fmt"
)

// Kind of failure, which decides how the provisioner retries.
type FailureKind int

const (
	// Denied: the reference is not allowed (gate off, no grant, grants
	// unreadable). Retrying on a timer is pointless; the claim is retried when
	// grants change.
	Denied FailureKind = iota
	// Invalid: the source exists in a state the user must fix (too small,
	// other driver, wrong volume mode, not ready yet). Retried with backoff.
	Invalid
	// Malformed: the reference itself can name no source (a kind in the
	// wrong case, apiGroup "core", a name no object can have). A claim's
	// data source cannot be changed, so no retry helps: the user is told
	// once and the claim is left alone.
	Malformed
)

// Error is a data source failure a user can act on. Reason is an Event reason
// (see pkg/events); Message says what to do.
type Error struct {
	Kind    FailureKind
	Reason  string
	Message string
	// DenialReason is a short label for metrics ("gate_disabled", "no_grant",
	// "grants_unavailable"), empty unless Kind is Denied.
	DenialReason string
	// Undecided is set on a Denied error when grants could not be read:
	// access was neither allowed nor revoked, so nothing in flight may be
	// undone and nothing held may be released on its account.
	Undecided bool
}

func (e *Error) Error() string { return e.Message }

// AsError returns the *Error inside err, if any.
func AsError(err error) (*Error, bool) {
	var e *Error
	ok := errors.As(err, &e)
	return e, ok
}

func invalid(reason, format string, args ...any) *Error {
	return &Error{Kind: Invalid, Reason: reason, Message: fmt.Sprintf(format, args...)}
}

// Reasons for invalid sources; they reach the user through the provisioning
// failure Event.
const (
	reasonSourceNotFound      = "DataSourceNotFound"
	reasonSourceNotReady      = "DataSourceNotReady"
	reasonSourceBeingDeleted  = "DataSourceBeingDeleted"
	reasonDriverMismatch      = "DataSourceDriverMismatch"
	reasonSourceTooLarge      = "DataSourceLargerThanClaim"
	reasonVolumeModeMismatch  = "DataSourceVolumeModeMismatch"
	reasonContentNotBoundBack = "DataSourceContentMismatch"
	// reasonSnapshotAPINotServed: the snapshot CRDs are not installed (or
	// discovery failed); an admin must act, not the claim's owner.
	reasonSnapshotAPINotServed = "SnapshotAPINotServed"
)
