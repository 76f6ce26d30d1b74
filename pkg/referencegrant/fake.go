package referencegrant

import (
	"slices"
	"sync"
)

// Fake is a Checker for tests of packages that depend on this one: it answers
// from decisions the test sets, records what was checked, and lets the test
// fire listener calls as a grant change would.
type Fake struct {
	mu        sync.Mutex
	decisions map[Reference]Decision
	err       error
	checked   []Reference
	listeners []func(Change)
}

var _ Checker = &Fake{}

// NewFake returns a Fake that allows only references within one namespace.
func NewFake() *Fake {
	return &Fake{decisions: make(map[Reference]Decision)}
}

// Allow makes Check allow ref, naming grant as the grant that allows it.
func (f *Fake) Allow(ref Reference, grant string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.decisions[ref] = Decision{Allowed: true, Grant: grant}
}

// Revoke makes Check refuse ref again.
func (f *Fake) Revoke(ref Reference) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.decisions, ref)
}

// SetError makes every Check return err until it is set to nil. To act as an
// unavailable grant API, err should wrap ErrUnavailable.
func (f *Fake) SetError(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.err = err
}

// Check implements Checker.
func (f *Fake) Check(ref Reference) (Decision, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.checked = append(f.checked, ref)
	if f.err != nil {
		return Decision{}, f.err
	}
	if ref.FromNamespace == ref.ToNamespace {
		return Decision{Allowed: true}, nil
	}
	return f.decisions[ref], nil
}

// Checked returns the references checked so far, in order.
func (f *Fake) Checked() []Reference {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.checked)
}

// AddListener implements Checker.
func (f *Fake) AddListener(fn func(Change)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.listeners = append(f.listeners, fn)
}

// Notify calls every listener with c, as a grant change (or AllChanged, grants
// becoming readable) would.
func (f *Fake) Notify(c Change) {
	f.mu.Lock()
	listeners := slices.Clone(f.listeners)
	f.mu.Unlock()
	for _, fn := range listeners {
		fn(c)
	}
}
