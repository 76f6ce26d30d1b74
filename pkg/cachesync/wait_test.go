package cachesync

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr/funcr"
	"k8s.io/klog/v2"
)

// logLines returns a context whose logger records every line, and the lines.
func logLines(ctx context.Context) (context.Context, func() []string) {
	var mu sync.Mutex
	var lines []string
	logger := funcr.New(func(prefix, args string) {
		mu.Lock()
		defer mu.Unlock()
		lines = append(lines, args)
	}, funcr.Options{Verbosity: 4})
	return klog.NewContext(ctx, logger), func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), lines...)
	}
}

// afterCalls is a HasSynced that turns true on its n-th call; n < 0 never.
func afterCalls(n int32) func() bool {
	var calls atomic.Int32
	return func() bool { return n >= 0 && calls.Add(1) >= n }
}

func TestWait(t *testing.T) {
	tests := []struct {
		name   string
		caches []Cache
		// cancelAfter ends the wait's ctx; 0 leaves it running.
		cancelAfter time.Duration
		want        bool
		// wantSlow: a "Waiting for caches" line names exactly these.
		wantSlow []string
		// notSlow are never named as slow.
		notSlow []string
	}{
		{
			name: "no caches",
			want: true,
		},
		{
			name:   "all synced at once",
			caches: []Cache{{"VolumeAttachments", afterCalls(1)}, {"Nodes", afterCalls(1)}},
			want:   true,
		},
		{
			name:     "the slow cache is named, the synced one is not",
			caches:   []Cache{{"Nodes", afterCalls(1)}, {"ReferenceGrants", afterCalls(5)}},
			want:     true,
			wantSlow: []string{"ReferenceGrants"},
			notSlow:  []string{"Nodes"},
		},
		{
			name:        "a cache that never syncs: false when ctx ends",
			caches:      []Cache{{"VolumeSnapshots", afterCalls(-1)}},
			cancelAfter: 500 * time.Millisecond,
			want:        false,
			wantSlow:    []string{"VolumeSnapshots"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, lines := logLines(t.Context())
			if tc.cancelAfter > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tc.cancelAfter)
				defer cancel()
			}
			if got := waitFor(ctx, time.Nanosecond, tc.caches); got != tc.want {
				t.Fatalf("waitFor = %v, want %v", got, tc.want)
			}
			var slow []string
			for _, l := range lines() {
				if strings.Contains(l, "Waiting for caches to sync") {
					slow = append(slow, l)
				}
			}
			if len(tc.wantSlow) > 0 && len(slow) == 0 {
				t.Fatalf("nothing logged about slow caches; log: %v", lines())
			}
			for _, l := range slow {
				for _, name := range tc.wantSlow {
					if !strings.Contains(l, name) {
						t.Errorf("slow line %s does not name %s", l, name)
					}
				}
				for _, name := range tc.notSlow {
					if strings.Contains(l, name) {
						t.Errorf("slow line %s names %s, which had synced", l, name)
					}
				}
			}
		})
	}
}
