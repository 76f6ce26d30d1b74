package provisioner

import (
	"context"
	"errors"
	"testing"
	"time"

	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/crossns/external-provisioner/pkg/access"
)

// TestVolumeAttributesClassLister: the informer runs only when RBAC lets it
// list and watch; with upstream's "get" only, no informer is registered (so
// none fails to list for ever) and classes are read with a GET.
func TestVolumeAttributesClassLister(t *testing.T) {
	tests := []struct {
		name         string
		checker      access.Checker
		wantInformer bool
	}{
		{name: "list and watch allowed", checker: access.Static{}, wantInformer: true},
		{name: "upstream's get only", checker: access.Static{Denied: map[string][]string{"volumeattributesclasses": {"list", "watch"}}}},
		{name: "review failed: cache as before", checker: access.Static{Err: errors.New("timeout")}, wantInformer: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			factory := informers.NewSharedInformerFactory(fake.NewClientset(), time.Hour)
			lister := VolumeAttributesClassLister(context.Background(), tc.checker, factory.Storage().V1().VolumeAttributesClasses())
			if lister == nil {
				t.Fatal("lister is nil")
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			factory.Start(ctx.Done())
			started := len(factory.WaitForCacheSync(ctx.Done())) > 0
			if started != tc.wantInformer {
				t.Errorf("informer started = %v, want %v", started, tc.wantInformer)
			}
			if _, err := lister.Get("gold"); err == nil {
				t.Error("Get(gold) on an empty cluster succeeded")
			}
		})
	}
}
