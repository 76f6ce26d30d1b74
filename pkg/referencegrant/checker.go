package referencegrant

import "errors"

// Reference identifies the two sides of a cross-namespace reference.
type Reference struct {
	FromGroup, FromKind, FromNamespace   string
	ToGroup, ToKind, ToNamespace, ToName string
}

// Decision is the answer to one reference check.
type Decision struct {
	Allowed bool
	// Grant is the name of a grant that allows it (in ToNamespace), when
	// Allowed. It is empty for a reference within one namespace, which needs
	// no grant.
	Grant string
}

// Checker answers whether a reference is allowed. Implementations: *Index
// (informer-backed through *Watcher) and *Fake for tests of other packages.
type Checker interface {
	// Check returns ErrUnavailable (wrapped, with the reason) when grants
	// cannot be read (CRD missing, forbidden, cache not yet synced), so that
	// callers can tell "no grant" apart from "cannot know yet".
	Check(ref Reference) (Decision, error)
	// AddListener registers fn to be called with what a grant change may
	// have decided differently (see Change), or with AllChanged when every
	// decision may be affected (grants became readable or unreadable). fn is
	// called outside any lock of the checker, from the goroutine that saw
	// the change; it must not block (enqueue work and return).
	AddListener(fn func(Change))
}

// ErrUnavailable is wrapped by every error that means "grants cannot be read
// right now". Test for it with errors.Is; the wrapping error says why and what
// to do about it.
var ErrUnavailable = errors.New("ReferenceGrants unavailable")

var (
	_ Checker = (*Index)(nil)
	_ Checker = (*Watcher)(nil)
)
