// Package invariants holds the checks of what the bed must look like once it
// settles, shared by the e2e tests (after each test) and the soak harness
// (while it runs and at its end):
//
//   - backend: the driver's backend volumes are exactly the volume handles of
//     the driver's PVs (none leaked, none lost), and its backend snapshots
//     exactly the snapshot handles of its VolumeSnapshotContents;
//   - leftovers: nothing of a set of namespaces is left Terminating, and no
//     PV or VolumeSnapshotContent of a deleted claim or snapshot whose policy
//     is Delete stays;
//   - grants: no CreateVolume from a source in another namespace outside the
//     time a grant allowed it (grants.go).
//
// A Ledger attributes what a check finds to whoever made it: the sidecar
// names volumes pvc-<claim UID> and csi-snapshotter names snapshots
// snapshot-<VolumeSnapshot UID>, so a watch of claims and snapshots turns a
// backend name into the object, and the object's namespace into its maker.
package invariants

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	snapshotclient "github.com/kubernetes-csi/external-snapshotter/client/v8/clientset/versioned"
	snapshotinformers "github.com/kubernetes-csi/external-snapshotter/client/v8/informers/externalversions"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// Ledger attributes objects on the bed to whoever made them (an e2e test, a
// soak run). It is safe for concurrent use.
type Ledger struct {
	mu sync.Mutex
	// whoOfNamespace is who created each namespace.
	whoOfNamespace map[string]string
	// whoOfVolume is who created each volume (by name) directly on the
	// driver.
	whoOfVolume map[string]string
	// objectOfUID describes every claim and VolumeSnapshot seen, by UID, as
	// "claim ns/name" or "VolumeSnapshot ns/name"; never forgotten, so a
	// leak is attributed after its claim is gone.
	objectOfUID map[string]string
}

// NewLedger returns an empty ledger.
func NewLedger() *Ledger {
	return &Ledger{whoOfNamespace: map[string]string{}, whoOfVolume: map[string]string{}, objectOfUID: map[string]string{}}
}

// AddNamespace records that who made namespace ns.
func (l *Ledger) AddNamespace(ns, who string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.whoOfNamespace[ns] = who
}

// AddDriverVolume records that who created the volume name on the driver.
func (l *Ledger) AddDriverVolume(name, who string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.whoOfVolume[name] = who
}

// AddObject records a claim ("claim") or VolumeSnapshot ("VolumeSnapshot")
// by UID.
func (l *Ledger) AddObject(uid, kind, namespace, name string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.objectOfUID[uid] = fmt.Sprintf("%s %s/%s", kind, namespace, name)
}

// NamespacesOf returns the namespaces who made, sorted.
func (l *Ledger) NamespacesOf(who string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for ns, owner := range l.whoOfNamespace {
		if owner == who {
			out = append(out, ns)
		}
	}
	slices.Sort(out)
	return out
}

// Owner is who a finding most likely belongs to.
type Owner struct {
	Who  string // "" when unknown: the test or run that made it
	What string // e.g. `claim dev/copy`, for the message
}

func (o Owner) String() string {
	switch {
	case o.Who == "" && o.What == "":
		return "likely owner unknown (no test's claim, snapshot or driver volume has this name)"
	case o.Who == "":
		return "likely owner: " + o.What + " (of no test of this run)"
	case o.What == "":
		return "likely owner: " + o.Who
	}
	return "likely owner: " + o.What + " of " + o.Who
}

// OwnerOfNamespace attributes an object in namespace ns.
func (l *Ledger) OwnerOfNamespace(ns, what string) Owner {
	l.mu.Lock()
	defer l.mu.Unlock()
	return Owner{Who: l.whoOfNamespace[ns], What: what}
}

// OwnerOfName attributes a backend object by the name it was created with:
// a volume made directly on the driver, or <prefix>-<UID> of a claim or
// VolumeSnapshot the ledger has seen.
func (l *Ledger) OwnerOfName(name string) Owner {
	l.mu.Lock()
	defer l.mu.Unlock()
	if who, ok := l.whoOfVolume[name]; ok {
		return Owner{Who: who, What: fmt.Sprintf("volume %q created directly on the driver", name)}
	}
	_, uid, ok := strings.Cut(name, "-")
	if !ok {
		return Owner{}
	}
	obj, ok := l.objectOfUID[uid]
	if !ok {
		return Owner{}
	}
	_, nsName, _ := strings.Cut(obj, " ")
	ns, _, _ := strings.Cut(nsName, "/")
	return Owner{Who: l.whoOfNamespace[ns], What: obj}
}

// Watch records the UIDs of all claims and VolumeSnapshots from now on,
// until stop is closed, and returns once both watches have synced (or
// syncWait passed).
func (l *Ledger) Watch(kube kubernetes.Interface, snaps snapshotclient.Interface, stop <-chan struct{}, syncWait time.Duration) error {
	kubeInf := informers.NewSharedInformerFactory(kube, 0)
	snapInf := snapshotinformers.NewSharedInformerFactory(snaps, 0)
	record := func(kind string) cache.ResourceEventHandler {
		add := func(obj any) {
			if m, ok := obj.(metav1.Object); ok {
				l.AddObject(string(m.GetUID()), kind, m.GetNamespace(), m.GetName())
			}
		}
		return cache.ResourceEventHandlerFuncs{AddFunc: add, UpdateFunc: func(_, obj any) { add(obj) }}
	}
	claims := kubeInf.Core().V1().PersistentVolumeClaims().Informer()
	vs := snapInf.Snapshot().V1().VolumeSnapshots().Informer()
	if _, err := claims.AddEventHandler(record("claim")); err != nil {
		return err
	}
	if _, err := vs.AddEventHandler(record("VolumeSnapshot")); err != nil {
		return err
	}
	kubeInf.Start(stop)
	snapInf.Start(stop)
	ctx, cancel := context.WithTimeout(context.Background(), syncWait)
	defer cancel()
	go func() {
		select {
		case <-stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	if !cache.WaitForCacheSync(ctx.Done(), claims.HasSynced, vs.HasSynced) {
		return fmt.Errorf("claim and VolumeSnapshot watches did not sync within %s", syncWait)
	}
	return nil
}
