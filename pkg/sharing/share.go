package sharing

import (
	"context"
	"fmt"
	"sync"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	coreinformers "k8s.io/client-go/informers/core/v1"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"

	"github.com/crossns/external-provisioner/pkg/events"
	"github.com/crossns/external-provisioner/pkg/keylock"
	"github.com/crossns/external-provisioner/pkg/referencegrant"
)

// Requeuer puts claims back into the provision loop at once
// (*requeue.Informer).
type Requeuer interface {
	Requeue(claims ...*v1.PersistentVolumeClaim)
}

// Config wires a Sharer.
type Config struct {
	// DriverName: only volumes of this driver are shared, and only claims
	// handed to it hold a source.
	DriverName string
	// Enabled is the CrossNamespaceVolumeSharing gate: off, new shares are
	// refused; existing ones keep their volume and their source held.
	Enabled bool
	// Client updates source claims and patches source PVs (the finalizer):
	// the verbs upstream's ClusterRole grants on them.
	Client kubernetes.Interface
	// Claims and Volumes are the shared informers (indexed here).
	Claims  coreinformers.PersistentVolumeClaimInformer
	Volumes coreinformers.PersistentVolumeInformer
	// Grants decides shares across namespaces; nil: only shares within one
	// namespace are decided (the others wait, undecided).
	Grants referencegrant.Checker
	// Requeue puts waiting share claims back into the loop when their source
	// or a grant changes; nil: they wait for the loop's resync.
	Requeue Requeuer
	// Recorder sends the Events of both sides.
	Recorder record.EventRecorder
	// Responsible reports whether this process looks after the source PV
	// (holds, releases, tells): nil, every PV. With --node-deployment it is
	// nodedeployment.Node.Accessible, so of the instances on every node only
	// the one on the volume's node acts for it — as for its deletion — and
	// each Event is sent once (a driver without topology: every instance).
	Responsible func(*v1.PersistentVolume) (bool, error)
}

// Sharer decides shares (Share), builds subordinate PVs, holds sources while
// subordinates live and tells the deletion guard which PVs share a volume
// (Subordinate, SharedWith). Run releases sources nothing shares any more.
type Sharer struct {
	cfg     Config
	claims  corelisters.PersistentVolumeClaimLister
	volumes corelisters.PersistentVolumeLister
	// claimIndex and volumeIndex are the informers' indexers (index.go).
	claimIndex  cache.Indexer
	volumeIndex cache.Indexer
	// queue holds names of source PVs to re-examine (sync).
	queue  workqueue.TypedRateLimitingInterface[string]
	synced []cache.InformerSynced
	// locks serialises hold and release per source PV.
	locks keylock.Map[string]

	// mu guards what each side was told, so an Event is sent once per
	// change, not once per sync: revoked (subordinate PV UID → why),
	// waiting (deleted source claim UID → subordinates it waited for),
	// expansion (claim UID → the size it asked for).
	mu        sync.Mutex
	revoked   map[types.UID]string
	waiting   map[types.UID]int
	expansion map[types.UID]string
}

// New indexes the informers and registers the handlers; call it before the
// informers start.
func New(cfg Config) (*Sharer, error) {
	s := &Sharer{
		cfg:         cfg,
		claims:      cfg.Claims.Lister(),
		volumes:     cfg.Volumes.Lister(),
		claimIndex:  cfg.Claims.Informer().GetIndexer(),
		volumeIndex: cfg.Volumes.Informer().GetIndexer(),
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "shared-source-protection"}),
		synced:    []cache.InformerSynced{cfg.Claims.Informer().HasSynced, cfg.Volumes.Informer().HasSynced},
		revoked:   map[types.UID]string{},
		waiting:   map[types.UID]int{},
		expansion: map[types.UID]string{},
	}
	if err := s.addIndexes(); err != nil {
		return nil, err
	}
	if err := s.addHandlers(); err != nil {
		return nil, err
	}
	if cfg.Grants != nil {
		cfg.Grants.AddListener(s.GrantsChanged)
	}
	return s, nil
}

// Requested reports whether the claim asks to share a volume: the
// provisioner then asks Share instead of calling CreateVolume.
func (s *Sharer) Requested(claim *v1.PersistentVolumeClaim) bool { return Requested(claim) }

// Share returns the subordinate PV named pvName that binds claim to the
// volume of the claim it names, or an *Error saying why not (anything else
// is transient). The source claim and its PV are held (SourceFinalizer)
// before the PV is returned, and the share is decided once more after that,
// so a grant or annotation removed meanwhile still stops it. Both claims get
// a VolumeShared Event. No CSI call is made.
func (s *Sharer) Share(ctx context.Context, claim *v1.PersistentVolumeClaim, pvName string) (*v1.PersistentVolume, error) {
	d, err := s.decide(claim)
	if err != nil {
		return nil, err
	}
	if err := s.hold(ctx, d.source, d.volume); err != nil {
		return nil, fmt.Errorf("protecting PersistentVolumeClaim %s and its PersistentVolume %s while they are shared: %w", d.from, d.volume.Name, err)
	}
	again, err := s.decide(claim)
	if err != nil {
		s.queue.Add(d.volume.Name) // nothing may need the hold any more
		return nil, err
	}
	if again.volume.Name != d.volume.Name {
		s.queue.Add(d.volume.Name)
		return nil, fmt.Errorf("PersistentVolumeClaim %s changed volume while being shared (%s, then %s); trying again", d.from, d.volume.Name, again.volume.Name)
	}
	pv := subordinate(claim, pvName, again)
	under := ""
	if again.grant != "" {
		under = fmt.Sprintf(" under ReferenceGrant %s/%s", again.from.Namespace, again.grant)
	}
	live := "writes through either claim are seen by both"
	if pv.Spec.CSI.ReadOnly {
		live = "it is mounted read-only and what the source writes is seen here"
	}
	s.cfg.Recorder.Eventf(claim, v1.EventTypeNormal, events.VolumeShared,
		"Bound to the volume of %s (PV %s, handle %s) as %s, shared %v%s: no copy was made, %s. "+
			"Expand or change the source, not this claim", again.from, again.volume.Name, again.volume.Spec.CSI.VolumeHandle, pvName, claim.Spec.AccessModes, under, live)
	s.cfg.Recorder.Eventf(again.source, v1.EventTypeNormal, events.VolumeShared,
		"Volume shared with %s/%s (PV %s) %v%s; deleting this claim waits until every claim sharing its volume is gone",
		claim.Namespace, claim.Name, pvName, claim.Spec.AccessModes, under)
	klog.FromContext(ctx).V(2).Info("Shared", "source", again.from.String(), "volume", again.volume.Name, "pv", pvName, "grant", again.grant)
	return pv, nil
}

// Subordinate reports whether pv shares a volume another PV owns: deleting
// it must not delete the volume.
func (s *Sharer) Subordinate(pv *v1.PersistentVolume) bool { return IsSubordinate(pv) }

// SharedWith names the other PVs of this driver with pv's volume handle:
// while there are any, the volume must not be deleted. It reads the PV
// cache; an error reading it answers "unknown", which the caller treats as
// shared.
func (s *Sharer) SharedWith(pv *v1.PersistentVolume) ([]string, error) {
	if pv.Spec.CSI == nil {
		return nil, nil
	}
	objs, err := s.volumeIndex.ByIndex(HandleIndex, handleKey(pv.Spec.CSI.Driver, pv.Spec.CSI.VolumeHandle))
	if err != nil {
		return nil, fmt.Errorf("looking up PVs with volume handle %s: %w", pv.Spec.CSI.VolumeHandle, err)
	}
	var out []string
	for _, o := range objs {
		if other := o.(*v1.PersistentVolume); other.Name != pv.Name {
			out = append(out, other.Name)
		}
	}
	return out, nil
}
