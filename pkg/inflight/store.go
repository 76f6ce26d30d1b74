package inflight

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"
)

// MaxBytes bounds the record's ConfigMap data (the API server refuses objects
// over 1 MiB). A call that would pass it is not started: ErrFull.
const MaxBytes = 900 << 10

// ErrFull means too many calls are in flight to record one more; the claim is
// retried later, when some have ended.
var ErrFull = errors.New("too many CreateVolume calls in flight to record another one")

// RemoveDelay is how long a removal may wait to be written with others (or
// with the next addition). A record written late costs nothing but a repeated
// idempotent call after a crash; a write per claim would cost the API budget.
const RemoveDelay = 5 * time.Second

// Store keeps records in memory and in one ConfigMap. Additions are durable
// when Add returns; removals are written lazily. Writes are batched: while
// one write is on the wire, every change made meanwhile waits for the next,
// so N claims arriving together cost about two writes, not N.
//
// Only the leader writes. A new leader reads the ConfigMap before its first
// call (Load) and, on a conflicting write, merges what it finds there (an old
// leader's last records are kept, never dropped).
type Store struct {
	client          kubernetes.Interface
	namespace, name string

	mu      sync.Mutex
	records map[types.UID]*Record
	// gen counts changes; committed is the last gen written. urgent is the gen
	// an Add waits for; dirtySince is when the first unwritten removal happened.
	gen, committed, urgent uint64
	dirtySince             time.Time
	// done is closed and replaced after each write attempt; tried is the gen
	// that attempt wrote and err its result.
	done  chan struct{}
	tried uint64
	err   error
	// removed holds claims removed since the last write, so a merge after a
	// conflict does not bring their records back.
	removed map[types.UID]struct{}
	// rv is the ConfigMap's resourceVersion after our last write.
	rv string
	// durable is false when the ConfigMap cannot be used (RBAC): records are
	// then kept in memory only, as upstream does.
	durable   bool
	kick      chan struct{}
	listeners []func(Record)
	// writes counts API writes, for tests and metrics.
	writes int
}

// NewStore returns a store kept in ConfigMap namespace/name. client nil keeps
// records in memory only.
func NewStore(client kubernetes.Interface, namespace, name string) *Store {
	return &Store{client: client, namespace: namespace, name: name, records: map[types.UID]*Record{},
		removed: map[types.UID]struct{}{}, done: make(chan struct{}), kick: make(chan struct{}, 1), durable: client != nil}
}

// ConfigMapName is the record's ConfigMap name for a driver: one per driver,
// so sidecars of two drivers in one namespace never share it.
func ConfigMapName(driver string) string {
	b := []byte("csi-provisioner-inflight-" + driver)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '.') {
			b[i] = '-'
		}
	}
	if len(b) > 253 {
		b = b[:253]
	}
	return string(b)
}

// Load reads the records written before (by this or an earlier leader) and
// creates the ConfigMap when missing. A ConfigMap that RBAC does not let the
// sidecar use turns durability off, with one log line naming the rule to add;
// other errors are returned (the caller retries).
func (s *Store) Load(ctx context.Context) error {
	if !s.durable {
		return nil
	}
	logger := klog.FromContext(ctx)
	cm, err := s.client.CoreV1().ConfigMaps(s.namespace).Get(ctx, s.name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		cm, err = s.client.CoreV1().ConfigMaps(s.namespace).Create(ctx, &v1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Name: s.name, Namespace: s.namespace,
				Labels: map[string]string{"app.kubernetes.io/managed-by": "csi-provisioner"}},
		}, metav1.CreateOptions{})
	}
	if apierrors.IsForbidden(err) {
		s.mu.Lock()
		s.durable = false
		s.mu.Unlock()
		logger.Error(err, "WARNING: CreateVolume calls in flight are remembered in memory only, so a volume whose call outlives a restart can leak; "+
			"let the provisioner's service account get, create and update configmaps in its namespace (deploy/kubernetes/rbac.yaml, Role external-provisioner-cfg)",
			"configMap", klog.KRef(s.namespace, s.name))
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading the in-flight record %s/%s: %w", s.namespace, s.name, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rv = cm.ResourceVersion
	for uid, data := range cm.Data {
		r, err := decode(uid, data)
		if err != nil {
			logger.Error(err, "Ignoring an unreadable in-flight record", "configMap", klog.KObj(cm))
			continue
		}
		if _, ok := s.records[r.ClaimUID]; !ok {
			s.records[r.ClaimUID] = r
		}
	}
	logger.V(2).Info("Loaded the record of CreateVolume calls in flight", "records", len(s.records), "configMap", klog.KObj(cm))
	return nil
}

// Durable reports whether records survive a restart.
func (s *Store) Durable() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.durable
}

// Add records a call and returns once the record is written (or at once when
// the same call is recorded already, or the store is memory-only). On error
// the call must not be made; a record that was there before stays.
func (s *Store) Add(ctx context.Context, r Record) error {
	s.mu.Lock()
	old, had := s.records[r.ClaimUID]
	if had && same(old, &r) && (s.committed >= s.gen || !s.durable) {
		s.mu.Unlock()
		return nil
	}
	if had {
		r.Started = old.Started
	} else if r.Started.IsZero() {
		r.Started = time.Now()
	}
	r.Request = withoutSecrets(r.Request)
	rec := r
	s.records[r.ClaimUID] = &rec
	if s.durable {
		if size, err := s.sizeLocked(); err != nil || size > MaxBytes {
			s.restoreLocked(r.ClaimUID, old)
			s.mu.Unlock()
			if err != nil {
				return err
			}
			return ErrFull
		}
	}
	s.gen++
	if !s.durable {
		s.committed = s.gen
		s.mu.Unlock()
		return nil
	}
	want := s.gen
	s.urgent = want
	s.mu.Unlock()
	s.poke()
	for {
		s.mu.Lock()
		if s.committed >= want {
			s.mu.Unlock()
			return nil
		}
		done := s.done
		s.mu.Unlock()
		select {
		case <-done:
			s.mu.Lock()
			err, ok := s.err, s.committed >= want
			if !ok && err != nil && s.tried >= want {
				// This write failed: give up this attempt, keep what was there.
				if cur := s.records[r.ClaimUID]; cur == &rec {
					s.restoreLocked(r.ClaimUID, old)
					s.gen++
				}
				s.mu.Unlock()
				return fmt.Errorf("recording CreateVolume %q before the call: %w", r.Request.GetName(), err)
			}
			s.mu.Unlock()
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (s *Store) restoreLocked(uid types.UID, old *Record) {
	if old != nil {
		s.records[uid] = old
	} else {
		delete(s.records, uid)
	}
}

// Remove forgets the call of a claim: it ended, and its volume is owned by a
// PV or was deleted (or never made). The removal is written lazily.
func (s *Store) Remove(uid types.UID) {
	s.mu.Lock()
	r, ok := s.records[uid]
	if !ok {
		s.mu.Unlock()
		return
	}
	delete(s.records, uid)
	s.removed[uid] = struct{}{}
	s.gen++
	if s.dirtySince.IsZero() {
		s.dirtySince = time.Now()
	}
	if !s.durable {
		s.committed = s.gen
	}
	listeners := slices.Clone(s.listeners)
	s.mu.Unlock()
	s.poke()
	for _, fn := range listeners {
		fn(*r)
	}
}

// Get returns the record of a claim.
func (s *Store) Get(uid types.UID) (Record, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.records[uid]
	if !ok {
		return Record{}, false
	}
	return *r, true
}

// List returns every record.
func (s *Store) List() []Record {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Record, 0, len(s.records))
	for _, r := range s.records {
		out = append(out, *r)
	}
	return out
}

// HoldsSource reports whether a recorded call copies from source (a
// protection key): the source must stay until the call is settled.
func (s *Store) HoldsSource(source string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range s.records {
		if r.Source == source {
			return true
		}
	}
	return false
}

// OnRemove registers fn, called after each removal (outside the store's lock).
func (s *Store) OnRemove(fn func(Record)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.listeners = append(s.listeners, fn)
}

// Writes returns how many API writes the store made.
func (s *Store) Writes() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.writes
}

func (s *Store) poke() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// Run writes changes until ctx ends: at once while an Add waits, otherwise
// RemoveDelay after the first unwritten removal.
func (s *Store) Run(ctx context.Context) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.kick:
		case <-timer.C:
		}
		s.mu.Lock()
		if !s.durable || s.committed >= s.gen {
			s.dirtySince = time.Time{}
			s.mu.Unlock()
			continue
		}
		if s.urgent <= s.committed {
			if wait := RemoveDelay - time.Since(s.dirtySince); wait > 0 {
				s.mu.Unlock()
				timer.Reset(wait)
				continue
			}
		}
		gen := s.gen
		data, err := s.dataLocked()
		s.mu.Unlock()
		if err == nil {
			err = s.write(ctx, data)
		}
		s.mu.Lock()
		s.writes++
		if err == nil {
			s.committed = gen
			s.dirtySince = time.Time{}
			clear(s.removed)
		}
		s.tried, s.err = gen, err
		close(s.done)
		s.done = make(chan struct{})
		s.mu.Unlock()
		if err != nil {
			klog.FromContext(ctx).Error(err, "Writing the record of CreateVolume calls in flight; retrying", "configMap", klog.KRef(s.namespace, s.name))
			timer.Reset(time.Second)
		}
	}
}

func (s *Store) dataLocked() (map[string]string, error) {
	data := make(map[string]string, len(s.records))
	for uid, r := range s.records {
		v, err := encode(r)
		if err != nil {
			return nil, err
		}
		data[string(uid)] = v
	}
	return data, nil
}

func (s *Store) sizeLocked() (int, error) {
	data, err := s.dataLocked()
	if err != nil {
		return 0, err
	}
	n := 0
	for k, v := range data {
		n += len(k) + len(v)
	}
	return n, nil
}

// write replaces the ConfigMap's data. On a conflict (another leader wrote
// since) it merges in the records it does not know, then writes again.
func (s *Store) write(ctx context.Context, data map[string]string) error {
	cms := s.client.CoreV1().ConfigMaps(s.namespace)
	cm := &v1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: s.name, Namespace: s.namespace, ResourceVersion: s.rvNow()}, Data: data}
	for attempt := 0; ; attempt++ {
		got, err := cms.Update(ctx, cm, metav1.UpdateOptions{})
		if err == nil {
			s.mu.Lock()
			s.rv = got.ResourceVersion
			s.mu.Unlock()
			return nil
		}
		if !apierrors.IsConflict(err) && !apierrors.IsNotFound(err) || attempt > 3 {
			return fmt.Errorf("writing ConfigMap %s/%s: %w", s.namespace, s.name, err)
		}
		fresh, gerr := cms.Get(ctx, s.name, metav1.GetOptions{})
		if apierrors.IsNotFound(gerr) {
			fresh, gerr = cms.Create(ctx, &v1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: s.name, Namespace: s.namespace}}, metav1.CreateOptions{})
		}
		if gerr != nil {
			return fmt.Errorf("re-reading ConfigMap %s/%s after a conflict: %w", s.namespace, s.name, gerr)
		}
		merged := maps.Clone(data)
		s.mu.Lock()
		for uid, v := range fresh.Data {
			if _, ok := merged[uid]; ok {
				continue
			}
			if _, gone := s.removed[types.UID(uid)]; gone {
				continue
			}
			if r, err := decode(uid, v); err == nil {
				// Another writer's call: keep it, and settle it like ours.
				if _, known := s.records[r.ClaimUID]; !known {
					s.records[r.ClaimUID] = r
				}
				merged[uid] = v
			}
		}
		s.mu.Unlock()
		cm.Data, cm.ResourceVersion = merged, fresh.ResourceVersion
	}
}

func (s *Store) rvNow() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rv
}
