package sharing

import (
	"errors"
	"fmt"
)

// FailureKind says what a refused share waits for; pkg/provisioner maps it
// to the provision loop's state (its state.go).
type FailureKind int

const (
	// Refused: not allowed (gate off, no grant, the owner has not opted
	// in) or the source cannot serve this claim now (not Bound, another
	// driver, too small). Not retried on a timer: a grant change or a change
	// of the source claim or its PV puts the claim back into the loop
	// (Sharer.requeue), and so does an edit of the claim itself.
	Refused FailureKind = iota
	// Unsupported: the claim can never share as it is (a data source or a
	// selector too, a single-node access mode): fields that cannot change.
	// One Event; the claim must be created again.
	Unsupported
)

// Error is a refused share. Reason is an Event reason (pkg/events); Message
// says what to change, and who can.
type Error struct {
	Kind    FailureKind
	Reason  string
	Message string
	// Denial is the metrics label (csi_provisioner_datasource_denials_total
	// reason): share_disabled, share_no_grant, share_not_allowed,
	// share_grants_unavailable, share_invalid, share_source_not_ready,
	// share_refused.
	Denial string
	// Undecided: grants could not be read, so the share is neither allowed
	// nor refused; nothing held is released on its account.
	Undecided bool
}

func (e *Error) Error() string { return e.Message }

// AsError returns the *Error inside err, if any.
func AsError(err error) (*Error, bool) {
	var e *Error
	ok := errors.As(err, &e)
	return e, ok
}

func refused(reason, denial, format string, args ...any) *Error {
	return &Error{Kind: Refused, Reason: reason, Denial: denial, Message: fmt.Sprintf(format, args...)}
}

func unsupported(reason, format string, args ...any) *Error {
	return &Error{Kind: Unsupported, Reason: reason, Denial: "share_invalid", Message: fmt.Sprintf(format, args...)}
}
