package referencegrant

import (
	"slices"
	"sync"
)

// Index holds what every known grant allows, keyed so that one check is one
// map lookup however many grants a namespace has. It is maintained
// incrementally: adding, changing or removing a grant touches only the
// entries that grant contributes to.
//
// An Index on its own (NewIndex) is always available; a Watcher marks the
// Index it feeds unavailable while the grant API cannot be read, and the
// reason travels with every Check under the same lock as the data, so no
// caller ever sees an empty index as "denied" while it is being rebuilt.
type Index struct {
	// mu guards everything below. Checks take the read lock only.
	mu sync.RWMutex
	// rules answers checks: what is allowed for one (from, to kind) pair.
	rules map[ruleKey]*ruleEntry
	// grants remembers what each grant contributed, so an update or a
	// delete can withdraw exactly that.
	grants map[grantID]*grantRecord
	// unavailable, when not nil, is returned by every cross-namespace
	// Check; it wraps ErrUnavailable.
	unavailable error

	// listenersMu guards listeners separately so that notifying never
	// holds mu.
	listenersMu sync.Mutex
	listeners   []func(Change)
}

// grantRecord is what the Index remembers about one grant.
type grantRecord struct {
	resourceVersion string
	permissions     []permission
}

// ruleEntry holds the grants that allow one ruleKey, split into those that
// allow every name and those that allow particular names.
type ruleEntry struct {
	anyName grantSet
	byName  map[string]*grantSet
}

// grantSet is a set of grant names (all in one namespace) with its
// lexicographically smallest member kept up to date on every write, so that a
// check can name one granting grant deterministically without sorting or
// allocating.
type grantSet struct {
	names    map[string]struct{}
	smallest string
}

// NewIndex returns an empty, available Index. Feed it with Upsert and Delete.
func NewIndex() *Index {
	return &Index{
		rules:  make(map[ruleKey]*ruleEntry),
		grants: make(map[grantID]*grantRecord),
	}
}

// Check tells whether ref is allowed by some grant in ref.ToNamespace. A
// reference within one namespace needs no grant and is always allowed. It
// does not allocate: it is called for every provisioning attempt.
func (x *Index) Check(ref Reference) (Decision, error) {
	if ref.FromNamespace == ref.ToNamespace {
		return Decision{Allowed: true}, nil
	}
	key := ruleKey{
		toNamespace:   ref.ToNamespace,
		fromNamespace: ref.FromNamespace,
		fromGroup:     ref.FromGroup,
		fromKind:      ref.FromKind,
		toGroup:       ref.ToGroup,
		toKind:        ref.ToKind,
	}
	x.mu.RLock()
	defer x.mu.RUnlock()
	if x.unavailable != nil {
		return Decision{}, x.unavailable
	}
	entry := x.rules[key]
	if entry == nil {
		return Decision{}, nil
	}
	grant := entry.anyName.smallest
	if ref.ToName != "" {
		if named := entry.byName[ref.ToName]; named != nil && (grant == "" || named.smallest < grant) {
			grant = named.smallest
		}
	}
	return Decision{Allowed: grant != "", Grant: grant}, nil
}

// AddListener registers fn to be called with what may have changed each time
// a grant is added, changed in what it allows, or deleted. See Checker.
func (x *Index) AddListener(fn func(Change)) {
	x.listenersMu.Lock()
	defer x.listenersMu.Unlock()
	x.listeners = append(x.listeners, fn)
}

// Upsert adds a grant or replaces an earlier version of it. obj is a v1 or
// v1beta1 ReferenceGrant. Listeners are called when what the grant allows
// changed.
func (x *Index) Upsert(obj any) error {
	g, err := asGrant(obj)
	if err != nil {
		return err
	}
	if c, changed := x.upsert(g.Namespace, g.Name, g.ResourceVersion, permissionsOf(g)); changed {
		x.notify(c)
	}
	return nil
}

// Delete removes a grant. obj is a v1 or v1beta1 ReferenceGrant or an
// informer tombstone (cache.DeletedFinalStateUnknown) for one. Deleting a
// grant the Index does not hold is not an error.
func (x *Index) Delete(obj any) error {
	id, err := idOf(obj)
	if err != nil {
		return err
	}
	if c, changed := x.remove(id); changed {
		x.notify(c)
	}
	return nil
}

// Len returns the number of grants held.
func (x *Index) Len() int {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return len(x.grants)
}

// upsert stores what a grant allows and returns which decisions may have
// changed, if any. A new version that allows exactly what the old one did (a
// label change, a reordered list) changes nothing and wakes nobody; one that
// adds a namespace wakes only that namespace's references.
func (x *Index) upsert(namespace, name, resourceVersion string, perms []permission) (Change, bool) {
	id := grantID{namespace: namespace, name: name}
	x.mu.Lock()
	defer x.mu.Unlock()
	old := x.grants[id]
	var oldPerms []permission
	if old != nil {
		oldPerms = old.permissions
	}
	c, changed := changeOf(namespace, oldPerms, perms)
	if old != nil && !changed {
		old.resourceVersion = resourceVersion
		return Change{}, false
	}
	if old != nil {
		x.withdraw(id.name, old.permissions)
	}
	for _, p := range perms {
		entry := x.rules[p.key]
		if entry == nil {
			entry = &ruleEntry{}
			x.rules[p.key] = entry
		}
		set := &entry.anyName
		if p.name != "" {
			set = entry.byName[p.name]
			if set == nil {
				if entry.byName == nil {
					entry.byName = make(map[string]*grantSet)
				}
				set = &grantSet{}
				entry.byName[p.name] = set
			}
		}
		set.add(id.name)
	}
	x.grants[id] = &grantRecord{resourceVersion: resourceVersion, permissions: perms}
	return c, changed
}

// remove forgets a grant and returns which decisions may have changed (those
// it took part in), if any.
func (x *Index) remove(id grantID) (Change, bool) {
	x.mu.Lock()
	defer x.mu.Unlock()
	old := x.grants[id]
	if old == nil {
		return Change{}, false
	}
	delete(x.grants, id)
	x.withdraw(id.name, old.permissions)
	return changeOf(id.namespace, old.permissions, nil)
}

// withdraw takes a grant's name out of every entry it contributed to and
// drops entries left empty, so the maps do not grow with churn. Callers hold
// mu for writing.
func (x *Index) withdraw(grant string, perms []permission) {
	for _, p := range perms {
		entry := x.rules[p.key]
		if entry == nil {
			continue
		}
		if p.name == "" {
			entry.anyName.remove(grant)
		} else if set := entry.byName[p.name]; set != nil {
			set.remove(grant)
			if set.empty() {
				delete(entry.byName, p.name)
			}
		}
		if entry.anyName.empty() && len(entry.byName) == 0 {
			delete(x.rules, p.key)
		}
	}
}

// reset drops every grant and makes Check return err (which must wrap
// ErrUnavailable) until setAvailable. A Watcher calls it whenever it stops an
// informer, because the next informer's initial list cannot tell it which
// grants were deleted in between.
func (x *Index) reset(err error) {
	x.mu.Lock()
	defer x.mu.Unlock()
	clear(x.rules)
	clear(x.grants)
	x.unavailable = err
}

// setUnavailable makes Check return err (which must wrap ErrUnavailable)
// without dropping grants, to change the reason while an informer syncs.
func (x *Index) setUnavailable(err error) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.unavailable = err
}

// err returns why Check fails, or nil when it answers.
func (x *Index) err() error {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return x.unavailable
}

// setAvailable lets Check answer from the grants held.
func (x *Index) setAvailable() {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.unavailable = nil
}

// notify calls every listener with c. It runs outside mu so that a listener
// may call Check.
func (x *Index) notify(c Change) {
	x.listenersMu.Lock()
	listeners := slices.Clone(x.listeners)
	x.listenersMu.Unlock()
	for _, fn := range listeners {
		fn(c)
	}
}

func (s *grantSet) add(name string) {
	if s.names == nil {
		s.names = make(map[string]struct{})
	}
	s.names[name] = struct{}{}
	if s.smallest == "" || name < s.smallest {
		s.smallest = name
	}
}

// remove deletes name; when it was the smallest, the next smallest is found
// by a scan, which is fine on the write path (a set holds the grants of one
// namespace for one pair, rarely more than a handful).
func (s *grantSet) remove(name string) {
	if _, ok := s.names[name]; !ok {
		return
	}
	delete(s.names, name)
	if name != s.smallest {
		return
	}
	s.smallest = ""
	for n := range s.names {
		if s.smallest == "" || n < s.smallest {
			s.smallest = n
		}
	}
}

func (s *grantSet) empty() bool {
	return len(s.names) == 0
}
