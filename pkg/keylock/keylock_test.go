package keylock

import (
	"sync"
	"testing"
)

func TestLockSerialisesPerKeyAndForgets(t *testing.T) {
	var m Map[string]
	var wg sync.WaitGroup
	counters := map[string]int{}
	var mu sync.Mutex
	for i := range 200 {
		key := []string{"a", "b", "c"}[i%3]
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer m.Lock(key)()
			mu.Lock()
			v := counters[key]
			mu.Unlock()
			mu.Lock()
			counters[key] = v + 1
			mu.Unlock()
		}()
	}
	wg.Wait()
	if counters["a"]+counters["b"]+counters["c"] != 200 {
		t.Fatalf("lost updates under the per-key lock: %v", counters)
	}
	if n := m.Len(); n != 0 {
		t.Fatalf("%d keys left after all unlocked, want 0", n)
	}
}
