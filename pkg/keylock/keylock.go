// Package keylock serialises work per key (a claim UID, a source) with a map
// that holds an entry only while someone holds or waits for its lock, so its
// size is bounded by the work in progress, not by every key ever seen.
package keylock

import "sync"

// Map is a set of mutexes, one per key. The zero value is ready to use.
type Map[K comparable] struct {
	mu sync.Mutex
	m  map[K]*entry
}

type entry struct {
	sync.Mutex
	refs int
}

// Lock locks key and returns its unlock.
func (k *Map[K]) Lock(key K) (unlock func()) {
	k.mu.Lock()
	if k.m == nil {
		k.m = map[K]*entry{}
	}
	e := k.m[key]
	if e == nil {
		e = &entry{}
		k.m[key] = e
	}
	e.refs++
	k.mu.Unlock()
	e.Lock()
	return func() {
		e.Unlock()
		k.mu.Lock()
		if e.refs--; e.refs == 0 {
			delete(k.m, key)
		}
		k.mu.Unlock()
	}
}

// Len is the number of keys locked or waited for.
func (k *Map[K]) Len() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return len(k.m)
}
