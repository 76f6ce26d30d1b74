package sharing

import (
	"slices"
	"strings"

	v1 "k8s.io/api/core/v1"

	"github.com/crossns/external-provisioner/pkg/events"
)

// tell sends the Events a shared source's state calls for, each once per
// change: the source claim's deletion waiting for its subordinates, a share
// whose annotation or grant was revoked, and a subordinate claim asking to
// grow. source is nil when the source claim is gone.
func (s *Sharer) tell(source *v1.PersistentVolumeClaim, subs []*v1.PersistentVolume) {
	var names []string
	for _, sub := range subs {
		consumer := s.consumerOf(sub)
		if ref := sub.Spec.ClaimRef; ref != nil {
			names = append(names, ref.Namespace+"/"+ref.Name)
		}
		if source != nil {
			s.tellRevoked(source, sub, consumer)
		}
		if consumer != nil {
			s.tellExpansion(source, sub, consumer)
		}
	}
	if source != nil && source.DeletionTimestamp != nil && len(names) > 0 {
		slices.Sort(names)
		s.mu.Lock()
		told := s.waiting[source.UID] == len(names)
		s.waiting[source.UID] = len(names)
		s.mu.Unlock()
		if !told {
			s.cfg.Recorder.Eventf(source, v1.EventTypeNormal, events.DeletionWaitsForShares,
				"Deletion waits until the %d claim(s) sharing this volume are deleted: %s. They keep working until then; "+
					"then the finalizer %s is removed and the volume is reclaimed as its PersistentVolume says",
				len(names), strings.Join(names, ", "), SourceFinalizer)
		}
	}
}

// consumerOf is the claim a subordinate is bound to, if it exists.
func (s *Sharer) consumerOf(sub *v1.PersistentVolume) *v1.PersistentVolumeClaim {
	ref := sub.Spec.ClaimRef
	if ref == nil {
		return nil
	}
	c, err := s.claims.PersistentVolumeClaims(ref.Namespace).Get(ref.Name)
	if err != nil || (ref.UID != "" && c.UID != ref.UID) {
		return nil
	}
	return c
}

// tellRevoked tells both claims, once, that an existing share is no longer
// allowed: it keeps its volume (pods keep their mounts, new pods of the
// claim still mount it) until the claim is deleted; new shares are refused.
// Undoing a share under a running pod would break it without taking
// anything back that the pod has not already read.
func (s *Sharer) tellRevoked(source *v1.PersistentVolumeClaim, sub *v1.PersistentVolume, consumer *v1.PersistentVolumeClaim) {
	from := Key{Namespace: source.Namespace, Name: source.Name}
	ns := ""
	if ref := sub.Spec.ClaimRef; ref != nil {
		ns = ref.Namespace
	}
	ok, undecided, why := s.permits(ns, sub.Spec.AccessModes, source, from)
	if undecided {
		return
	}
	s.mu.Lock()
	told := s.revoked[sub.UID]
	if ok {
		delete(s.revoked, sub.UID)
	} else {
		s.revoked[sub.UID] = why
	}
	s.mu.Unlock()
	if ok || told == why {
		return
	}
	who := sub.Name
	if ref := sub.Spec.ClaimRef; ref != nil {
		who = ref.Namespace + "/" + ref.Name
	}
	if consumer != nil {
		s.cfg.Recorder.Eventf(consumer, v1.EventTypeWarning, events.ShareRevoked,
			"Sharing of %s was revoked (%s): this claim keeps the shared volume (PV %s) — running pods keep their mounts and new pods "+
				"can still mount it — until the claim is deleted; new claims asking to share %s are refused", from, why, sub.Name, from)
	}
	s.cfg.Recorder.Eventf(source, v1.EventTypeWarning, events.ShareRevoked,
		"Sharing with %s was revoked (%s), but that existing share keeps the volume until %s is deleted, and deleting this claim waits "+
			"for it; new shares are refused. To end it now, the owner of namespace %s (or a cluster admin) deletes the claim", who, why, who, ns)
}

// tellExpansion warns, once per size asked, when a subordinate claim asks
// for more than its PV has. Expansion is refused: the subordinate PV names
// ExpansionRefusedSecret as its expand secret, so external-resizer and
// kubelet fail before they call the driver — resizing through a share would
// resize the volume of every claim sharing it.
func (s *Sharer) tellExpansion(source *v1.PersistentVolumeClaim, sub *v1.PersistentVolume, consumer *v1.PersistentVolumeClaim) {
	req, ok := consumer.Spec.Resources.Requests[v1.ResourceStorage]
	have := sub.Spec.Capacity[v1.ResourceStorage]
	if !ok || req.Cmp(have) <= 0 {
		return
	}
	s.mu.Lock()
	told := s.expansion[consumer.UID] == req.String()
	s.expansion[consumer.UID] = req.String()
	s.mu.Unlock()
	if told {
		return
	}
	from, _ := SourceOf(sub)
	s.cfg.Recorder.Eventf(consumer, v1.EventTypeWarning, events.SharedVolumeExpansionRefused,
		"This claim shares the volume of %s; expanding it to %s would resize that volume for every claim sharing it, so it is refused "+
			"(its PV %s names the expand secret %s/%s, which does not exist, and the resizer stops there). Ask the owner of %s to expand it",
		from, req.String(), sub.Name, from.Namespace, ExpansionRefusedSecret, from)
	if source != nil {
		s.cfg.Recorder.Eventf(source, v1.EventTypeWarning, events.SharedVolumeExpansionRefused,
			"%s/%s, which shares this volume, asked to expand it to %s; refused. Expand this claim if the volume needs the space",
			consumer.Namespace, consumer.Name, req.String())
	}
}

// hasFinalizer reports whether fins holds SourceFinalizer.
func hasFinalizer(fins []string) bool { return slices.Contains(fins, SourceFinalizer) }
