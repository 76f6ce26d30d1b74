package bench

import (
	"math"
	"slices"
	"time"
)

// Percentiles summarise a set of latencies, in seconds.
type Percentiles struct {
	N   int     `json:"n"`
	Min float64 `json:"min"`
	P50 float64 `json:"p50"`
	P95 float64 `json:"p95"`
	P99 float64 `json:"p99"`
	Max float64 `json:"max"`
}

// percentiles uses the nearest-rank method: P99 of 200 samples is the 198th
// smallest, an observed value rather than an interpolation.
func percentiles(ds []time.Duration) Percentiles {
	if len(ds) == 0 {
		return Percentiles{}
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	rank := func(p float64) float64 {
		i := int(math.Ceil(p*float64(len(s)))) - 1
		return s[max(i, 0)].Seconds()
	}
	return Percentiles{N: len(s), Min: s[0].Seconds(), P50: rank(0.50), P95: rank(0.95), P99: rank(0.99), Max: s[len(s)-1].Seconds()}
}

// median of a set of run results; the mean of the middle two for an even
// count. NaN for none.
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	m := len(s) / 2
	if len(s)%2 == 1 {
		return s[m]
	}
	return (s[m-1] + s[m]) / 2
}

// rate is events per second over d; 0 for an empty interval.
func rate(n int, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}
