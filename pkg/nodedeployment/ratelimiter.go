package nodedeployment

import (
	"math/rand/v2"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
)

// jitterLimiter is the wait before an instance tries to select its node for
// a claim: base·2^(attempts lost), at most max, less a random part of base,
// so that instances starting together do not all write at once, and an
// instance that keeps losing a claim (another node was faster, or its
// update conflicted) waits longer each time. Forget starts a claim over.
type jitterLimiter struct {
	mu   sync.Mutex
	exp  workqueue.TypedRateLimiter[types.UID]
	base time.Duration
	// rand returns a number in [0, 1); tests fix it.
	rand func() float64
}

func newJitterLimiter(base, max time.Duration) *jitterLimiter {
	return &jitterLimiter{exp: workqueue.NewTypedItemExponentialFailureRateLimiter[types.UID](base, max), base: base, rand: rand.Float64}
}

// When counts an attempt for the claim and returns how long to wait first.
func (l *jitterLimiter) When(uid types.UID) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	d := l.exp.When(uid) - time.Duration(float64(l.base)*l.rand())
	return max(d, 0)
}

// Attempts is how many attempts were counted since the claim was forgotten.
func (l *jitterLimiter) Attempts(uid types.UID) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.exp.NumRequeues(uid)
}

// Forget starts the claim over: it was won, by this instance or another,
// or it is gone.
func (l *jitterLimiter) Forget(uid types.UID) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.exp.Forget(uid)
}
