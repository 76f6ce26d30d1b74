package referencegrant

import (
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/go-logr/logr"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	clienttesting "k8s.io/client-go/testing"
	gatewayfake "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned/fake"
)

// TestWatcherHasSynced: the Watcher counts as synced once it has listed the
// grants or decided why it cannot, and not while it merely has not looked
// yet: provisioning waits for it, so that no claim is told "grants
// unavailable" on a normal start.
func TestWatcherHasSynced(t *testing.T) {
	forbidden := func(client *gatewayfake.Clientset) {
		client.PrependReactor("list", resource, func(clienttesting.Action) (bool, runtime.Object, error) {
			return true, nil, apierrors.NewForbidden(schema.GroupResource{Group: apiGroup, Resource: resource}, "",
				fmt.Errorf("RBAC: access denied"))
		})
	}
	tests := []struct {
		name      string
		discovery func() *discoveryStub
		client    func(*gatewayfake.Clientset)
		// wantErr is part of Err() once synced; "" means grants are readable.
		wantErr string
	}{
		{
			name:      "grants listed",
			discovery: func() *discoveryStub { return newDiscoveryStub("v1") },
		},
		{
			name:      "CRD missing",
			discovery: func() *discoveryStub { return newDiscoveryStub() },
			wantErr:   "serves no ReferenceGrant API",
		},
		{
			name:      "listing forbidden",
			discovery: func() *discoveryStub { return newDiscoveryStub("v1") },
			client:    forbidden,
			wantErr:   "forbidden",
		},
		{
			name: "discovery fails",
			discovery: func() *discoveryStub {
				d := newDiscoveryStub("v1")
				d.PrependReactor("get", "resource", func(clienttesting.Action) (bool, runtime.Object, error) {
					return true, nil, errors.New("connection refused")
				})
				return d
			},
			wantErr: "connection refused",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			client := gatewayfake.NewClientset(newGrant("prod", "share", claimsFrom("dev"), snapshots("nightly")))
			if tc.client != nil {
				tc.client(client)
			}
			if NewWatcher(client, tc.discovery(), 0, logr.Discard()).HasSynced() {
				t.Fatal("HasSynced before Run = true, want false: nothing has been asked yet")
			}
			w, _ := runWatcher(t, client, tc.discovery(), logr.Discard())
			eventually(t, "HasSynced", w.HasSynced)
			err := w.Err()
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("Err once synced = %v, want nil: grants were listed", err)
				}
				d, err := w.Check(snapshotRef("dev", "prod", "nightly"))
				if err != nil || !d.Allowed {
					t.Errorf("Check once synced = %+v, %v; want allowed by the listed grant", d, err)
				}
				return
			}
			if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("Err once synced = %v, want ErrUnavailable saying %q", err, tc.wantErr)
			}
		})
	}
}

// TestWatcherNotSyncedWhileListRetries: a list error the reflector retries
// (the API server hiccups) decides nothing: the Watcher stays unsynced
// until the list succeeds.
func TestWatcherNotSyncedWhileListRetries(t *testing.T) {
	client := gatewayfake.NewClientset(newGrant("prod", "share", claimsFrom("dev"), snapshots("nightly")))
	var failing atomic.Bool
	var lists atomic.Int32
	failing.Store(true)
	client.PrependReactor("list", resource, func(clienttesting.Action) (bool, runtime.Object, error) {
		lists.Add(1)
		if failing.Load() {
			return true, nil, apierrors.NewInternalError(errors.New("etcd leader changed"))
		}
		return false, nil, nil
	})
	w, _ := runWatcher(t, client, newDiscoveryStub("v1"), logr.Discard())
	eventually(t, "the failed list to be reported", func() bool {
		err := w.Err()
		return lists.Load() >= 1 && err != nil && strings.Contains(err.Error(), "etcd leader changed")
	})
	if w.HasSynced() {
		t.Fatal("HasSynced while the list is being retried = true, want false")
	}
	failing.Store(false)
	eventually(t, "HasSynced after the list succeeds", w.HasSynced)
	if err := w.Err(); err != nil {
		t.Errorf("Err once synced = %v, want nil", err)
	}
}
