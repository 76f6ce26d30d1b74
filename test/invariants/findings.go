package invariants

import (
	"fmt"
	"slices"
	"strings"
	"time"

	snapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/ptr"

	"github.com/crossns/external-provisioner/pkg/sharing"
)

// Names of the checks, as findings and reports name them.
const (
	// CheckBackend: backend volumes are the driver's PVs' handles and
	// backend snapshots the contents' handles (no leak, nothing lost).
	CheckBackend = "backend-matches-api"
	// CheckTerminating: nothing is left Terminating.
	CheckTerminating = "nothing-terminating"
	// CheckDeletedGone: the PV of a deleted claim and the content of a
	// deleted VolumeSnapshot (policy Delete) are gone.
	CheckDeletedGone = "deleted-claims-gone"
)

// Attributor says who a finding belongs to; *Ledger is one.
type Attributor interface {
	// OwnerOfName attributes a backend object by its name.
	OwnerOfName(name string) Owner
	// OwnerOfNamespace attributes an object in namespace ns; what names it.
	OwnerOfNamespace(ns, what string) Owner
}

// Finding is one broken invariant.
type Finding struct {
	// Check is the name of the broken check (Check* constants).
	Check string
	// Key identifies the finding across surveys.
	Key   string
	Msg   string
	Owner Owner
}

func (f Finding) String() string { return f.Msg + "; " + f.Owner.String() }

// BackendFindings compares the driver's backend with its PVs and
// VolumeSnapshotContents.
//
// A shared volume (pkg/sharing) has one owner PV and subordinate PVs with
// the same handle: the subordinates are references to the owner's volume,
// not volumes of their own. So a volume is owned only by a PV that is not a
// subordinate: one referred to by subordinates alone is leaked (nobody will
// delete it once they are gone), and one with two owners is a finding too
// (deleting either PV deletes the other's data).
func BackendFindings(s *State, a Attributor) []Finding {
	var out []Finding
	ownersOf, subsOf := map[string][]string{}, map[string][]string{}
	for i := range s.PVs {
		pv := &s.PVs[i]
		h := pv.Spec.CSI.VolumeHandle
		if sharing.IsSubordinate(pv) {
			subsOf[h] = append(subsOf[h], pv.Name)
		} else {
			ownersOf[h] = append(ownersOf[h], pv.Name)
		}
	}
	backendVolume := map[string]bool{}
	for _, v := range s.Volumes {
		backendVolume[v.ID] = true
		owners, subs := ownersOf[v.ID], subsOf[v.ID]
		switch {
		case len(owners) == 0 && len(subs) == 0:
			out = append(out, Finding{
				Check: CheckBackend,
				Key:   "leaked volume " + v.ID,
				Msg:   fmt.Sprintf("leaked volume %s (name %q, created %s): in the driver's backend, but no PV has this handle", v.ID, v.Name, v.CreationTime.Format(time.RFC3339)),
				Owner: a.OwnerOfName(v.Name),
			})
		case len(owners) == 0:
			out = append(out, Finding{
				Check: CheckBackend,
				Key:   "leaked volume " + v.ID,
				Msg: fmt.Sprintf("leaked volume %s (name %q, created %s): only subordinate PVs %v (shares) have this handle and the PV that owned it is gone: nothing will delete it",
					v.ID, v.Name, v.CreationTime.Format(time.RFC3339), subs),
				Owner: a.OwnerOfName(v.Name),
			})
		case len(owners) > 1:
			out = append(out, Finding{
				Check: CheckBackend,
				Key:   "volume with two owners " + v.ID,
				Msg:   fmt.Sprintf("volume %s (name %q) is the handle of PVs %v, none of them a share of another: deleting either deletes the others' data", v.ID, v.Name, owners),
				Owner: a.OwnerOfName(v.Name),
			})
		}
	}
	for _, pv := range s.PVs {
		h := pv.Spec.CSI.VolumeHandle
		if backendVolume[h] || pv.DeletionTimestamp != nil ||
			(pv.Status.Phase == corev1.VolumeReleased && pv.Spec.PersistentVolumeReclaimPolicy == corev1.PersistentVolumeReclaimDelete) {
			continue
		}
		o := Owner{What: "PV " + pv.Name}
		if ref := pv.Spec.ClaimRef; ref != nil {
			o = a.OwnerOfNamespace(ref.Namespace, fmt.Sprintf("claim %s/%s", ref.Namespace, ref.Name))
		}
		out = append(out, Finding{
			Check: CheckBackend,
			Key:   "lost volume " + pv.Name,
			Msg:   fmt.Sprintf("lost volume %s: PV %s (%s, reclaim %s%s) has it as handle, but the driver's backend has no such volume", h, pv.Name, pv.Status.Phase, pv.Spec.PersistentVolumeReclaimPolicy, claimOf(pv.Spec.ClaimRef)),
			Owner: o,
		})
	}

	if s.NoSnapshotAPI {
		return out
	}
	contentOfHandle := map[string]*snapshotv1.VolumeSnapshotContent{}
	for i := range s.Contents {
		for _, h := range ContentHandles(&s.Contents[i]) {
			contentOfHandle[h] = &s.Contents[i]
		}
	}
	backendSnapshot := map[string]bool{}
	for _, sn := range s.Snapshots {
		backendSnapshot[sn.ID] = true
		if contentOfHandle[sn.ID] != nil {
			continue
		}
		o := a.OwnerOfName(sn.Name)
		if o.Who == "" && o.What == "" {
			o = a.OwnerOfName(volumeName(s, sn.SourceVolumeID))
		}
		out = append(out, Finding{
			Check: CheckBackend,
			Key:   "leaked snapshot " + sn.ID,
			Msg:   fmt.Sprintf("leaked snapshot %s (name %q, of volume %s): in the driver's backend, but no VolumeSnapshotContent has this handle", sn.ID, sn.Name, sn.SourceVolumeID),
			Owner: o,
		})
	}
	for _, vsc := range s.Contents {
		h := ptr.Deref(StatusHandle(&vsc), "")
		if h == "" || backendSnapshot[h] || vsc.DeletionTimestamp != nil {
			continue
		}
		ref := vsc.Spec.VolumeSnapshotRef
		out = append(out, Finding{
			Check: CheckBackend,
			Key:   "lost snapshot " + vsc.Name,
			Msg:   fmt.Sprintf("lost snapshot %s: VolumeSnapshotContent %s (of VolumeSnapshot %s/%s) has it as snapshotHandle, but the driver's backend has no such snapshot", h, vsc.Name, ref.Namespace, ref.Name),
			Owner: a.OwnerOfNamespace(ref.Namespace, fmt.Sprintf("VolumeSnapshot %s/%s", ref.Namespace, ref.Name)),
		})
	}
	return out
}

func claimOf(ref *corev1.ObjectReference) string {
	if ref == nil {
		return ""
	}
	return fmt.Sprintf(", claim %s/%s", ref.Namespace, ref.Name)
}

// StatusHandle is the backend snapshot a VolumeSnapshotContent reports, or nil.
func StatusHandle(vsc *snapshotv1.VolumeSnapshotContent) *string {
	if vsc.Status == nil {
		return nil
	}
	return vsc.Status.SnapshotHandle
}

// ContentHandles are the backend snapshots a VolumeSnapshotContent stands
// for: its status handle, and the handle a pre-provisioned one names.
func ContentHandles(vsc *snapshotv1.VolumeSnapshotContent) []string {
	var out []string
	if h := ptr.Deref(StatusHandle(vsc), ""); h != "" {
		out = append(out, h)
	}
	if h := ptr.Deref(vsc.Spec.Source.SnapshotHandle, ""); h != "" {
		out = append(out, h)
	}
	return out
}

func volumeName(s *State, id string) string {
	for _, v := range s.Volumes {
		if v.ID == id {
			return v.Name
		}
	}
	return ""
}

// LeftoverFindings lists what the cleanup of who should have removed:
// objects of its namespaces left Terminating, and PVs and
// VolumeSnapshotContents of its deleted claims and snapshots that were to be
// deleted with them. The findings are attributed to who.
func LeftoverFindings(s *State, who string, namespaces []string) []Finding {
	var out []Finding
	mine := func(namespace string) bool { return slices.Contains(namespaces, namespace) }
	own := func(what string) Owner { return Owner{Who: who, What: what} }
	for _, n := range s.Namespaces {
		if n.DeletionTimestamp != nil {
			out = append(out, Finding{
				Check: CheckTerminating,
				Key:   "terminating namespace " + n.Name,
				Msg:   fmt.Sprintf("namespace %s left Terminating (conditions: %s)", n.Name, namespaceConditions(&n)),
				Owner: own("namespace " + n.Name),
			})
		}
	}
	claimUIDs := map[string]bool{}
	for _, pvc := range s.Claims {
		claimUIDs[string(pvc.UID)] = true
		if pvc.DeletionTimestamp != nil {
			what := fmt.Sprintf("claim %s/%s", pvc.Namespace, pvc.Name)
			out = append(out, Finding{
				Check: CheckTerminating,
				Key:   "terminating " + what,
				Msg:   fmt.Sprintf("%s left Terminating since %s (phase %s, volume %q, finalizers %v)", what, pvc.DeletionTimestamp.Format(time.RFC3339), pvc.Status.Phase, pvc.Spec.VolumeName, pvc.Finalizers),
				Owner: own(what),
			})
		}
	}
	for _, vs := range s.VolumeSnapshots {
		if vs.DeletionTimestamp != nil {
			what := fmt.Sprintf("VolumeSnapshot %s/%s", vs.Namespace, vs.Name)
			out = append(out, Finding{
				Check: CheckTerminating,
				Key:   "terminating " + what,
				Msg:   fmt.Sprintf("%s left Terminating since %s (finalizers %v)", what, vs.DeletionTimestamp.Format(time.RFC3339), vs.Finalizers),
				Owner: own(what),
			})
		}
	}
	for _, pv := range s.PVs {
		ref := pv.Spec.ClaimRef
		if ref == nil || !mine(ref.Namespace) {
			continue
		}
		what := fmt.Sprintf("claim %s/%s", ref.Namespace, ref.Name)
		switch {
		case pv.DeletionTimestamp != nil:
			out = append(out, Finding{
				Check: CheckTerminating,
				Key:   "terminating PV " + pv.Name,
				Msg:   fmt.Sprintf("PV %s (handle %s) of %s left Terminating since %s (phase %s, finalizers %v)", pv.Name, pv.Spec.CSI.VolumeHandle, what, pv.DeletionTimestamp.Format(time.RFC3339), pv.Status.Phase, pv.Finalizers),
				Owner: own(what),
			})
		case !claimUIDs[string(ref.UID)] && pv.Spec.PersistentVolumeReclaimPolicy == corev1.PersistentVolumeReclaimDelete:
			out = append(out, Finding{
				Check: CheckDeletedGone,
				Key:   "undeleted PV " + pv.Name,
				Msg:   fmt.Sprintf("PV %s (handle %s) of deleted %s not deleted (phase %s, reclaim Delete, finalizers %v)", pv.Name, pv.Spec.CSI.VolumeHandle, what, pv.Status.Phase, pv.Finalizers),
				Owner: own(what),
			})
		}
	}
	snapUIDs := map[string]bool{}
	for _, vs := range s.VolumeSnapshots {
		snapUIDs[string(vs.UID)] = true
	}
	for _, vsc := range s.Contents {
		ref := vsc.Spec.VolumeSnapshotRef
		if !mine(ref.Namespace) {
			continue
		}
		what := fmt.Sprintf("VolumeSnapshot %s/%s", ref.Namespace, ref.Name)
		handle := ptr.Deref(StatusHandle(&vsc), "")
		switch {
		case vsc.DeletionTimestamp != nil:
			out = append(out, Finding{
				Check: CheckTerminating,
				Key:   "terminating VolumeSnapshotContent " + vsc.Name,
				Msg:   fmt.Sprintf("VolumeSnapshotContent %s (handle %q) of %s left Terminating since %s (finalizers %v)", vsc.Name, handle, what, vsc.DeletionTimestamp.Format(time.RFC3339), vsc.Finalizers),
				Owner: own(what),
			})
		case !snapUIDs[string(ref.UID)] && vsc.Spec.DeletionPolicy == snapshotv1.VolumeSnapshotContentDelete:
			out = append(out, Finding{
				Check: CheckDeletedGone,
				Key:   "undeleted VolumeSnapshotContent " + vsc.Name,
				Msg:   fmt.Sprintf("VolumeSnapshotContent %s (handle %q) of deleted %s not deleted (deletionPolicy Delete, finalizers %v)", vsc.Name, handle, what, vsc.Finalizers),
				Owner: own(what),
			})
		}
	}
	return out
}

func namespaceConditions(n *corev1.Namespace) string {
	var parts []string
	for _, c := range n.Status.Conditions {
		if c.Status == corev1.ConditionTrue {
			parts = append(parts, fmt.Sprintf("%s: %s", c.Type, c.Message))
		}
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, "; ")
}
