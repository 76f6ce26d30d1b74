package invariants

import (
	"strings"
	"testing"
	"time"

	"github.com/crossns/external-provisioner/test/csidriver"
)

func TestGrantFindings(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	call := func(s float64, code string) CreateCall {
		return CreateCall{Time: at(s), Ended: true, Code: code, Name: "pvc-1", SnapshotID: "snap-1"}
	}
	granted := []GrantWindow{{Created: at(10), Revoked: at(20)}}
	tests := []struct {
		name    string
		windows []GrantWindow
		calls   []CreateCall
		bound   bool
		want    []string // substrings, one per finding
		repeats int
	}{
		{name: "inside a window", windows: granted, calls: []CreateCall{call(12, "OK")}, bound: true},
		{name: "within the slack after revocation", windows: granted, calls: []CreateCall{call(21.9, "OK")}, bound: true},
		{name: "never granted", calls: []CreateCall{call(5, "OK")},
			want: []string{"started at 12:00:05.000 (OK) outside every grant: no grant ever allowed it", "ended Bound"}, bound: true},
		{name: "before the grant", windows: granted, calls: []CreateCall{call(9.5, "DeadlineExceeded")},
			want: []string{"outside every grant: granted 12:00:10.000–12:00:20.000"}},
		{name: "first call after revocation", windows: granted, calls: []CreateCall{call(22.5, "OK")},
			want: []string{"started at 12:00:22.500", "ended Bound"}, bound: true},
		{name: "repeat after revocation to settle", windows: granted,
			calls: []CreateCall{call(15, "DeadlineExceeded"), call(30, "OK")}, repeats: 1},
		{name: "repeat after revocation bound", windows: granted,
			calls: []CreateCall{call(15, "DeadlineExceeded"), call(30, "OK")}, bound: true, repeats: 1,
			want: []string{"ended Bound, but no CreateVolume for it succeeded while a grant allowed it"}},
		{name: "repeat with another source", windows: granted,
			calls: []CreateCall{call(15, "DeadlineExceeded"), {Time: at(30), Ended: true, Code: "OK", Name: "pvc-1", SnapshotID: "snap-2"}},
			want:  []string{"with another source"}},
		{name: "first call still running when the repeats came", windows: granted,
			calls: []CreateCall{{Time: at(15), Name: "pvc-1"}, call(25, "Aborted"), call(26, "Aborted")}, repeats: 2},
		{name: "settled without its source, the recorded call never arrived", windows: granted,
			calls: []CreateCall{{Time: at(30), Ended: true, Code: "OK", Name: "pvc-1"}}},
		{name: "settled without its source after the authorized call", windows: granted,
			calls: []CreateCall{call(15, "DeadlineExceeded"), {Time: at(30), Ended: true, Code: "OK", Name: "pvc-1"}}},
		{name: "granted again", windows: []GrantWindow{{Created: at(10), Revoked: at(20)}, {Created: at(40)}},
			calls: []CreateCall{call(15, "Unavailable"), call(41, "OK")}, bound: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := CrossClaim{Namespace: "dev", Name: "copy", Source: "VolumeSnapshot prod/nightly", Windows: tc.windows, Who: "soak"}
			findings, repeats := GrantFindings(c, tc.calls, true, tc.bound)
			if repeats != tc.repeats {
				t.Errorf("repeats = %d, want %d", repeats, tc.repeats)
			}
			if len(findings) != len(tc.want) {
				t.Fatalf("findings %v, want %d", findings, len(tc.want))
			}
			for i, f := range findings {
				if f.Check != CheckGrants || !strings.Contains(f.Msg, tc.want[i]) || !strings.Contains(f.String(), "claim dev/copy of soak") {
					t.Errorf("finding %q (%s) does not contain %q", f, f.Check, tc.want[i])
				}
			}
		})
	}
}

// TestCallSet: calls read from the call log (when they end) and from the
// arrival log join by name and arrival time, in arrival order.
func TestCallSet(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	cs := CallSet{}
	// The call log lists the quick repeat before the slow first call.
	cs.Add(CreateCall{Time: t0.Add(10 * time.Second), Name: "pvc-1", Ended: true, Code: "Aborted"})
	cs.Add(ArrivedCreateCalls([]csidriver.ArrivalRecord{
		{Time: t0, Method: "CreateVolume", Name: "pvc-1"},
		{Time: t0.Add(10 * time.Second), Method: "CreateVolume", Name: "pvc-1"},
		{Time: t0, Method: "DeleteVolume"},
	})...)
	cs.Add(CreateCall{Time: t0, Name: "pvc-1", Ended: true, Code: "OK", SnapshotID: "s"})
	got := cs.Of("pvc-1")
	if len(got) != 2 || !got[0].Time.Equal(t0) || got[0].Code != "OK" || !got[0].Ended || got[1].Code != "Aborted" || !got[1].Ended {
		t.Errorf("calls = %+v, want the OK call first, then the Aborted one, both ended", got)
	}
}
