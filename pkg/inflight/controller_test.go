package inflight

import (
	"context"
	"testing"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"
)

type fakeSettler struct{ settled []types.UID }

func (f *fakeSettler) Settle(_ context.Context, r Record) error {
	f.settled = append(f.settled, r.ClaimUID)
	return nil
}

// TestControllerDecidesWhichRecordsAreOver: a record whose PV exists is done;
// one whose claim exists is the provision loop's; one whose claim is gone,
// replaced or being deleted is settled.
func TestControllerDecidesWhichRecordsAreOver(t *testing.T) {
	claim := func(name string, uid types.UID, mods ...func(*v1.PersistentVolumeClaim)) *v1.PersistentVolumeClaim {
		c := &v1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Namespace: "dev", Name: name, UID: uid}}
		for _, m := range mods {
			m(c)
		}
		return c
	}
	tests := []struct {
		name        string
		objs        []any
		wantSettled bool
		wantRecord  bool
	}{
		{name: "claim pending: the loop's", objs: []any{claim("c1", "uid-1")}, wantRecord: true},
		{name: "claim gone: settled", wantSettled: true, wantRecord: true},
		{name: "claim replaced by one of the same name: settled", objs: []any{claim("c1", "other")}, wantSettled: true, wantRecord: true},
		{name: "claim being deleted: settled", objs: []any{claim("c1", "uid-1", func(c *v1.PersistentVolumeClaim) { c.DeletionTimestamp = &metav1.Time{} })}, wantSettled: true, wantRecord: true},
		{name: "PV exists for the claim: done",
			objs: []any{&v1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: "pvc-uid-1"}, Spec: v1.PersistentVolumeSpec{ClaimRef: &v1.ObjectReference{UID: "uid-1"}}}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			store := NewStore(nil, "", "")
			if err := store.Add(context.Background(), rec(1)); err != nil {
				t.Fatal(err)
			}
			factory := informers.NewSharedInformerFactory(fake.NewClientset(), 0)
			settler := &fakeSettler{}
			c, err := NewController(store, settler, factory.Core().V1().PersistentVolumeClaims(), factory.Core().V1().PersistentVolumes())
			if err != nil {
				t.Fatal(err)
			}
			for _, o := range tc.objs {
				switch o := o.(type) {
				case *v1.PersistentVolumeClaim:
					_ = factory.Core().V1().PersistentVolumeClaims().Informer().GetIndexer().Add(o)
				case *v1.PersistentVolume:
					_ = factory.Core().V1().PersistentVolumes().Informer().GetIndexer().Add(o)
				}
			}
			if err := c.sync(context.Background(), "uid-1"); err != nil {
				t.Fatal(err)
			}
			if got := len(settler.settled) == 1; got != tc.wantSettled {
				t.Errorf("settled = %v, want %v", got, tc.wantSettled)
			}
			if _, ok := store.Get("uid-1"); ok != tc.wantRecord {
				t.Errorf("record kept = %v, want %v", ok, tc.wantRecord)
			}
		})
	}
}
