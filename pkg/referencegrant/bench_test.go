package referencegrant

import (
	"fmt"
	"testing"
)

// BenchmarkAllowed measures Check against indexes of growing size. Each grant
// lives in one of 100 namespaces, lets claims from one other namespace use one
// named snapshot, and one grant in ten allows every snapshot; the checks mix
// allowed, denied-by-name and denied-by-namespace references. Check must stay
// flat and allocation-free as grants grow.
func BenchmarkAllowed(b *testing.B) {
	for _, size := range []int{10, 1000, 10000} {
		b.Run(fmt.Sprintf("grants=%d", size), func(b *testing.B) {
			x := NewIndex()
			var refs []Reference
			for i := range size {
				sourceNS := fmt.Sprintf("source-%d", i%100)
				claimNS := fmt.Sprintf("claims-%d", i)
				snapshot := fmt.Sprintf("snap-%d", i)
				target := snapshots(snapshot)
				if i%10 == 0 {
					target = allSnapshots()
				}
				if err := x.Upsert(newGrant(sourceNS, fmt.Sprintf("grant-%d", i), claimsFrom(claimNS), target)); err != nil {
					b.Fatal(err)
				}
				if len(refs) < 64 {
					refs = append(refs,
						snapshotRef(claimNS, sourceNS, snapshot),      // allowed
						snapshotRef(claimNS, sourceNS, "not-granted"), // allowed only by the i%10 grants
						snapshotRef("stranger", sourceNS, snapshot))   // denied
				}
			}
			b.ReportAllocs()
			b.ResetTimer()
			i := 0
			for b.Loop() {
				if _, err := x.Check(refs[i%len(refs)]); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
	}
}
