package inflight

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	clienttesting "k8s.io/client-go/testing"
)

const ns, name = "kube-system", "csi-provisioner-inflight-test"

func rec(i int) Record {
	return Record{ClaimUID: types.UID(fmt.Sprintf("uid-%d", i)), Namespace: "dev", Claim: fmt.Sprintf("c%d", i),
		PVName: fmt.Sprintf("pvc-uid-%d", i), Source: "VolumeSnapshot/prod/nightly",
		SecretRef: &v1.SecretReference{Namespace: "kube-system", Name: "prov"},
		Request: &csi.CreateVolumeRequest{Name: fmt.Sprintf("pvc-uid-%d", i), Secrets: map[string]string{"password": "s3cret"},
			CapacityRange: &csi.CapacityRange{RequiredBytes: 1 << 20}}}
}

func started(t *testing.T, client *fake.Clientset) (*Store, context.Context) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	s := NewStore(client, ns, name)
	if err := s.Load(ctx); err != nil {
		t.Fatal(err)
	}
	go s.Run(ctx)
	return s, ctx
}

func stored(t *testing.T, client *fake.Clientset) map[string]string {
	t.Helper()
	cm, err := client.CoreV1().ConfigMaps(ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return cm.Data
}

func updates(client *fake.Clientset) int {
	n := 0
	for _, a := range client.Actions() {
		if a.GetVerb() == "update" {
			n++
		}
	}
	return n
}

// TestAddIsDurableAndSecretFree: when Add returns the record is in the
// ConfigMap, without the secret's data; a new process reads it back.
func TestAddIsDurableAndSecretFree(t *testing.T) {
	client := fake.NewClientset()
	s, ctx := started(t, client)
	if err := s.Add(ctx, rec(1)); err != nil {
		t.Fatal(err)
	}
	data := stored(t, client)
	if len(data) != 1 || strings.Contains(data["uid-1"], "s3cret") {
		t.Fatalf("stored %v, want one record without the secret", data)
	}
	again := NewStore(client, ns, name)
	if err := again.Load(ctx); err != nil {
		t.Fatal(err)
	}
	r, ok := again.Get("uid-1")
	if !ok || r.Request.Name != "pvc-uid-1" || r.SecretRef.Name != "prov" || r.Source != "VolumeSnapshot/prod/nightly" || len(r.Request.Secrets) != 0 {
		t.Fatalf("after restart: %+v (found %v)", r, ok)
	}
	// The same call again costs no write.
	before := updates(client)
	if err := s.Add(ctx, rec(1)); err != nil {
		t.Fatal(err)
	}
	if updates(client) != before {
		t.Errorf("re-adding the same call wrote again")
	}
}

// TestGroupCommit: many claims arriving together share writes.
func TestGroupCommit(t *testing.T) {
	client := fake.NewClientset()
	// Each write takes a while, as on a real API server, so adds pile up.
	client.PrependReactor("update", "configmaps", func(clienttesting.Action) (bool, runtime.Object, error) {
		time.Sleep(20 * time.Millisecond)
		return false, nil, nil
	})
	s, ctx := started(t, client)
	const n = 100
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.Add(ctx, rec(i)); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if got := len(stored(t, client)); got != n {
		t.Fatalf("%d records stored, want %d", got, n)
	}
	if w := updates(client); w > 10 {
		t.Errorf("%d writes for %d claims, want a few (group commit)", w, n)
	}
	t.Logf("%d claims recorded in %d writes", n, updates(client))
}

// TestRemoveIsLazy: removals are written together, after RemoveDelay or
// with the next addition; listeners hear of each removal at once.
func TestRemoveIsLazy(t *testing.T) {
	client := fake.NewClientset()
	s, ctx := started(t, client)
	for i := range 3 {
		if err := s.Add(ctx, rec(i)); err != nil {
			t.Fatal(err)
		}
	}
	var heard []string
	var mu sync.Mutex
	s.OnRemove(func(r Record) { mu.Lock(); heard = append(heard, string(r.ClaimUID)); mu.Unlock() })
	before := updates(client)
	s.Remove("uid-0")
	s.Remove("uid-1")
	s.Remove("nope")
	if updates(client) != before {
		t.Errorf("a removal was written at once")
	}
	if s.HoldsSource("VolumeSnapshot/prod/nightly") != true {
		t.Errorf("uid-2 still holds the source")
	}
	if err := s.Add(ctx, rec(5)); err != nil { // carries the removals
		t.Fatal(err)
	}
	data := stored(t, client)
	if _, ok := data["uid-0"]; ok || len(data) != 2 {
		t.Errorf("stored %d records (%v), want uid-2 and uid-5", len(data), keys(data))
	}
	mu.Lock()
	defer mu.Unlock()
	if strings.Join(heard, ",") != "uid-0,uid-1" {
		t.Errorf("listeners heard %v", heard)
	}
}

// TestForbiddenKeepsRecordsInMemory: under RBAC without configmaps (upstream's
// rules) provisioning goes on, records in memory only.
func TestForbiddenKeepsRecordsInMemory(t *testing.T) {
	client := fake.NewClientset()
	client.PrependReactor("*", "configmaps", func(clienttesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: "configmaps"}, name, errors.New("RBAC"))
	})
	s, ctx := started(t, client)
	if s.Durable() {
		t.Fatal("durable under RBAC that forbids the ConfigMap")
	}
	if err := s.Add(ctx, rec(1)); err != nil {
		t.Fatal(err)
	}
	if _, ok := s.Get("uid-1"); !ok {
		t.Fatal("record not kept in memory")
	}
}

// TestConflictMergesOtherWriter: records an old leader wrote after this one
// loaded are kept, never dropped.
func TestConflictMergesOtherWriter(t *testing.T) {
	client := fake.NewClientset()
	s, ctx := started(t, client)
	if err := s.Add(ctx, rec(1)); err != nil {
		t.Fatal(err)
	}
	// Another writer adds uid-9 behind our back.
	other := NewStore(client, ns, name)
	if err := other.Load(ctx); err != nil {
		t.Fatal(err)
	}
	octx, cancel := context.WithCancel(ctx)
	go other.Run(octx)
	if err := other.Add(octx, rec(9)); err != nil {
		t.Fatal(err)
	}
	cancel()
	// The fake clientset does not check resourceVersion: make the next update conflict once.
	conflicted := false
	client.PrependReactor("update", "configmaps", func(clienttesting.Action) (bool, runtime.Object, error) {
		if conflicted {
			return false, nil, nil
		}
		conflicted = true
		return true, nil, apierrors.NewConflict(schema.GroupResource{Resource: "configmaps"}, name, errors.New("stale"))
	})
	if err := s.Add(ctx, rec(2)); err != nil {
		t.Fatal(err)
	}
	data := stored(t, client)
	for _, k := range []string{"uid-1", "uid-2", "uid-9"} {
		if _, ok := data[k]; !ok {
			t.Errorf("after the conflict %s is missing from %v", k, keys(data))
		}
	}
	if _, ok := s.Get("uid-9"); !ok {
		t.Errorf("the other writer's record is not settled by this one")
	}
}

// TestFullRefusesNewCalls: past MaxBytes no more calls start.
func TestFullRefusesNewCalls(t *testing.T) {
	client := fake.NewClientset()
	s, ctx := started(t, client)
	big := rec(1)
	big.Request.Parameters = map[string]string{"blob": strings.Repeat("x", MaxBytes)}
	if err := s.Add(ctx, big); !errors.Is(err, ErrFull) {
		t.Fatalf("Add() = %v, want ErrFull", err)
	}
	if _, ok := s.Get("uid-1"); ok {
		t.Errorf("refused record kept")
	}
}

// TestWriteFailureRefusesTheCall: when the record cannot be written the
// call is not made, and a record that was there before stays.
func TestWriteFailureRefusesTheCall(t *testing.T) {
	client := fake.NewClientset()
	s, ctx := started(t, client)
	if err := s.Add(ctx, rec(1)); err != nil {
		t.Fatal(err)
	}
	client.PrependReactor("update", "configmaps", func(clienttesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewServiceUnavailable("etcd down")
	})
	changed := rec(1)
	changed.Request.CapacityRange.RequiredBytes = 2 << 20
	if err := s.Add(ctx, changed); err == nil {
		t.Fatal("Add() succeeded while the record could not be written")
	}
	if err := s.Add(ctx, rec(2)); err == nil {
		t.Fatal("Add() succeeded while the record could not be written")
	}
	if r, ok := s.Get("uid-1"); !ok || r.Request.CapacityRange.RequiredBytes != 1<<20 {
		t.Errorf("the earlier record of uid-1 was lost or changed: %+v", r)
	}
	if _, ok := s.Get("uid-2"); ok {
		t.Errorf("a call that was refused is recorded")
	}
}

func keys(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}
