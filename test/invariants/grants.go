package invariants

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"

	"github.com/crossns/external-provisioner/test/csidriver"
)

// CheckGrants: no volume is copied from a source in another namespace
// unless a ReferenceGrant allowed it when the copy started.
const CheckGrants = "no-unauthorized-copy"

// RevocationSlack is how long after a grant's revocation a CreateVolume
// under it may still start: the grant is checked right before the call,
// and the sidecar learns of the revocation from its watch.
const RevocationSlack = 2 * time.Second

// GrantWindow is a time a ReferenceGrant allowed a claim: from when the
// grant's creation was requested until its deletion had returned (Revoked
// zero: never revoked).
type GrantWindow struct {
	Created, Revoked time.Time
}

// Covers reports whether a call starting at t started under the grant.
func (w GrantWindow) Covers(t time.Time) bool {
	return !t.Before(w.Created) && (w.Revoked.IsZero() || !t.After(w.Revoked.Add(RevocationSlack)))
}

func (w GrantWindow) String() string {
	if w.Revoked.IsZero() {
		return stamp(w.Created) + "–(not revoked)"
	}
	return stamp(w.Created) + "–" + stamp(w.Revoked)
}

func stamp(t time.Time) string { return t.Format("15:04:05.000") }

// CreateCall is one CreateVolume the driver received.
type CreateCall struct {
	// Time is when the call arrived.
	Time time.Time
	Name string
	// Ended: the call ended (it is in the call log) with Code, and its
	// request is known: SnapshotID or VolumeID is its content source. A
	// call known only from the arrival log is still running, or died with
	// the driver.
	Ended bool
	Code  string
	// SnapshotID or VolumeID is its content source, if any.
	SnapshotID, VolumeID string
}

// CreateCalls decodes the CreateVolume calls of driver call log records
// (calls that ended).
func CreateCalls(records []csidriver.CallRecord) ([]CreateCall, error) {
	var out []CreateCall
	for _, r := range csidriver.FilterCalls(records, "CreateVolume") {
		req := &csi.CreateVolumeRequest{}
		if err := r.DecodeRequest(req); err != nil {
			return nil, err
		}
		out = append(out, CreateCall{
			Time: r.Time, Name: req.GetName(), Ended: true, Code: r.Code,
			SnapshotID: req.GetVolumeContentSource().GetSnapshot().GetSnapshotId(),
			VolumeID:   req.GetVolumeContentSource().GetVolume().GetVolumeId(),
		})
	}
	return out, nil
}

// ArrivedCreateCalls are the CreateVolume calls of driver arrival records,
// as calls not known to have ended.
func ArrivedCreateCalls(records []csidriver.ArrivalRecord) []CreateCall {
	var out []CreateCall
	for _, r := range records {
		if r.Method == "CreateVolume" {
			out = append(out, CreateCall{Time: r.Time, Name: r.Name})
		}
	}
	return out
}

// CallSet collects the CreateVolume calls of volume names from the arrival
// log and the call log, read in any order and in parts: a call is one
// arrival time of one name.
type CallSet map[string]map[int64]CreateCall

// Add records calls: an ended call replaces what its arrival recorded.
func (cs CallSet) Add(calls ...CreateCall) {
	for _, c := range calls {
		byTime := cs[c.Name]
		if byTime == nil {
			byTime = map[int64]CreateCall{}
			cs[c.Name] = byTime
		}
		if old, ok := byTime[c.Time.UnixNano()]; ok && old.Ended && !c.Ended {
			continue
		}
		byTime[c.Time.UnixNano()] = c
	}
}

// Of returns the calls of a name in arrival order.
func (cs CallSet) Of(name string) []CreateCall {
	out := make([]CreateCall, 0, len(cs[name]))
	for _, c := range cs[name] {
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b CreateCall) int { return a.Time.Compare(b.Time) })
	return out
}

// CrossClaim is a claim of a source in another namespace, as its maker
// knows it.
type CrossClaim struct {
	Namespace, Name string
	// Source describes the source, e.g. "VolumeSnapshot prod/nightly".
	Source string
	// Windows are the times a grant allowed the claim, oldest first.
	Windows []GrantWindow
	// Who made it, for the findings' owner.
	Who string
}

func (c CrossClaim) covered(t time.Time) bool {
	for _, w := range c.Windows {
		if w.Covers(t) {
			return true
		}
	}
	return false
}

func (c CrossClaim) windows() string {
	if len(c.Windows) == 0 {
		return "no grant ever allowed it"
	}
	parts := make([]string, len(c.Windows))
	for i, w := range c.Windows {
		parts[i] = w.String()
	}
	return "granted " + strings.Join(parts, ", ")
}

// GrantFindings checks the CreateVolume calls made for one cross-namespace
// claim (in arrival order) against the times a grant allowed it:
//
//   - the first call starts inside a grant window (from the grant's creation
//     until RevocationSlack after its revocation);
//   - calls that ended without a content source are not counted (they
//     copy nothing: the sidecar settles a call without its source);
//   - a later call outside every window repeats the request of an earlier
//     call made inside one (compared when both ended; calls are in arrival
//     order, see CallSet): the sidecar repeats a call that may still run in
//     the driver to learn its volume and delete it (the CSI spec's way to
//     learn what a call made), so it copies nothing the grant did not allow
//     (unless the earlier call made nothing at all, which neither the
//     sidecar nor this check can tell);
//   - when final, a claim that ended Bound got its volume from a call that
//     succeeded inside a window (revocation wins: no volume is bound under
//     a grant that was gone).
//
// repeats counts the calls of the second kind.
func GrantFindings(c CrossClaim, calls []CreateCall, final, bound bool) (findings []Finding, repeats int) {
	what := fmt.Sprintf("claim %s/%s", c.Namespace, c.Name)
	owner := Owner{Who: c.Who, What: what}
	authorized := false
	okInside := false
	var sourced []CreateCall
	for _, call := range calls {
		// A call that ended without a content source read nothing of the
		// source: the sidecar settles a call that way (no copy for a claim
		// that may not have the data).
		if !call.Ended || call.SnapshotID != "" || call.VolumeID != "" {
			sourced = append(sourced, call)
		}
	}
	calls = sourced
	for i, call := range calls {
		inside := c.covered(call.Time)
		switch {
		case inside:
			authorized = true
			okInside = okInside || call.Code == "OK"
		case i == 0 || !authorized:
			findings = append(findings, Finding{
				Check: CheckGrants,
				Key:   "unauthorized CreateVolume " + call.Name + " " + call.Time.String(),
				Msg: fmt.Sprintf("CreateVolume %s for %s from %s started at %s (%s) outside every grant: %s",
					call.Name, what, c.Source, stamp(call.Time), outcome(call), c.windows()),
				Owner: owner,
			})
		case calls[0].Ended && call.Ended && !sameSource(calls[0], call):
			findings = append(findings, Finding{
				Check: CheckGrants,
				Key:   "changed CreateVolume " + call.Name + " " + call.Time.String(),
				Msg: fmt.Sprintf("CreateVolume %s for %s started at %s outside every grant (%s) with another source than its authorized first call (snapshot %q volume %q, was %q %q)",
					call.Name, what, stamp(call.Time), c.windows(), call.SnapshotID, call.VolumeID, calls[0].SnapshotID, calls[0].VolumeID),
				Owner: owner,
			})
		default:
			repeats++
		}
	}
	if final && bound && len(calls) > 0 && !okInside {
		findings = append(findings, Finding{
			Check: CheckGrants,
			Key:   "bound without grant " + what,
			Msg: fmt.Sprintf("%s from %s ended Bound, but no CreateVolume for it succeeded while a grant allowed it (%s; %d calls, the first at %s)",
				what, c.Source, c.windows(), len(calls), stamp(calls[0].Time)),
			Owner: owner,
		})
	}
	return findings, repeats
}

func outcome(c CreateCall) string {
	if !c.Ended {
		return "not ended"
	}
	return c.Code
}

func sameSource(a, b CreateCall) bool {
	return a.SnapshotID == b.SnapshotID && a.VolumeID == b.VolumeID
}
