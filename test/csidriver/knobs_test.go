package csidriver

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestFailNext(t *testing.T) {
	type rule struct {
		method string
		count  int
		code   codes.Code
	}
	tests := []struct {
		name  string
		rules []rule
		// calls are made in order; want is the code of each.
		calls []string
		want  []codes.Code
	}{
		{
			name:  "fail twice then recover",
			rules: []rule{{"GetCapacity", 2, codes.Unavailable}},
			calls: []string{"GetCapacity", "GetCapacity", "GetCapacity"},
			want:  []codes.Code{codes.Unavailable, codes.Unavailable, codes.OK},
		},
		{
			name:  "other methods unaffected",
			rules: []rule{{"GetCapacity", 1, codes.Internal}},
			calls: []string{"Probe", "GetCapacity", "Probe", "GetCapacity"},
			want:  []codes.Code{codes.OK, codes.Internal, codes.OK, codes.OK},
		},
		{
			name:  "wildcard applies to any method",
			rules: []rule{{AllMethods, 2, codes.ResourceExhausted}},
			calls: []string{"Probe", "GetCapacity", "Probe"},
			want:  []codes.Code{codes.ResourceExhausted, codes.ResourceExhausted, codes.OK},
		},
		{
			name:  "method rule is used before wildcard rule",
			rules: []rule{{AllMethods, 1, codes.Aborted}, {"GetCapacity", 1, codes.NotFound}},
			calls: []string{"GetCapacity", "GetCapacity", "GetCapacity"},
			want:  []codes.Code{codes.NotFound, codes.Aborted, codes.OK},
		},
		{
			name:  "count zero clears a rule",
			rules: []rule{{"Probe", 3, codes.Internal}, {"Probe", 0, codes.OK}},
			calls: []string{"Probe"},
			want:  []codes.Code{codes.OK},
		},
	}
	td := startDriver(t, Config{})
	ctx := context.Background()
	call := func(method string) error {
		var err error
		switch method {
		case "Probe":
			_, err = td.ident.Probe(ctx, &csi.ProbeRequest{})
		case "GetCapacity":
			_, err = td.ctrl.GetCapacity(ctx, &csi.GetCapacityRequest{})
		default:
			t.Fatalf("test calls unsupported method %s", method)
		}
		return err
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			td.Reset()
			for _, r := range tc.rules {
				if err := td.FailNext(r.method, r.count, r.code); err != nil {
					t.Fatal(err)
				}
			}
			for i, m := range tc.calls {
				if got := status.Code(call(m)); got != tc.want[i] {
					t.Errorf("call %d (%s): code %v, want %v", i, m, got, tc.want[i])
				}
			}
			if st := td.Knobs(); len(st.Failures) != 0 {
				t.Errorf("rules left after the test: %+v", st.Failures)
			}
		})
	}
}

func TestKnobValidation(t *testing.T) {
	d, err := New(Config{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		err  error
	}{
		{"unknown method delay", d.SetDelay("CreateVolumes", time.Second)},
		{"negative delay", d.SetDelay("CreateVolume", -time.Second)},
		{"unknown method failure", d.FailNext("createvolume", 1, codes.Internal)},
		{"negative count", d.FailNext("CreateVolume", -1, codes.Internal)},
		{"OK is not a failure", d.FailNext("CreateVolume", 1, codes.OK)},
	}
	for _, tc := range tests {
		if tc.err == nil {
			t.Errorf("%s: no error", tc.name)
		}
	}
	if _, err := New(Config{DataDir: t.TempDir(), Delays: map[string]time.Duration{"Nope": time.Second}}); err == nil {
		t.Error("New accepted a delay for an unknown method")
	}
}

func TestDelay(t *testing.T) {
	const delay = 200 * time.Millisecond
	tests := []struct {
		name      string
		delays    map[string]time.Duration
		method    string
		delayed   bool
		cancelled bool
	}{
		{name: "method delay", delays: map[string]time.Duration{"Probe": delay}, method: "Probe", delayed: true},
		{name: "wildcard delay", delays: map[string]time.Duration{AllMethods: delay}, method: "Probe", delayed: true},
		{name: "other method not delayed", delays: map[string]time.Duration{"CreateVolume": 10 * time.Second}, method: "Probe"},
		{name: "method zero overrides wildcard", delays: map[string]time.Duration{AllMethods: 10 * time.Second, "Probe": 0}, method: "Probe"},
		{name: "caller deadline ends the delay", delays: map[string]time.Duration{"Probe": 10 * time.Second}, method: "Probe", cancelled: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			td := startDriver(t, Config{})
			for m, d := range tc.delays {
				if err := td.SetDelay(m, d); err != nil {
					t.Fatal(err)
				}
			}
			ctx := context.Background()
			if tc.cancelled {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, 100*time.Millisecond)
				defer cancel()
			}
			start := time.Now()
			_, err := td.ident.Probe(ctx, &csi.ProbeRequest{})
			elapsed := time.Since(start)

			switch {
			case tc.cancelled:
				if status.Code(err) != codes.DeadlineExceeded {
					t.Fatalf("got %v, want DeadlineExceeded", err)
				}
				if elapsed > 5*time.Second {
					t.Errorf("cancelled call took %v", elapsed)
				}
			case tc.delayed:
				if err != nil {
					t.Fatal(err)
				}
				if elapsed < delay || elapsed > delay+5*time.Second {
					t.Errorf("call took %v, want about %v", elapsed, delay)
				}
			default:
				if err != nil {
					t.Fatal(err)
				}
				if elapsed > 5*time.Second {
					t.Errorf("undelayed call took %v", elapsed)
				}
			}
		})
	}
}

// TestDelayIgnoringCancel covers calls that outlive their caller: each step
// is one CreateVolume, made in order; a step with a timeout gives up on its
// call long before the delay ends.
func TestDelayIgnoringCancel(t *testing.T) {
	const delay = 700 * time.Millisecond
	const giveUp = 100 * time.Millisecond
	type step struct {
		name     string
		timeout  time.Duration // 0: wait for the answer
		wantCode codes.Code
		// waitRunning waits until the driver lists the call as running,
		// so that the next step surely overlaps it.
		waitRunning bool
	}
	tests := []struct {
		name         string
		delay        time.Duration
		ignoreCancel bool
		exempt       bool // CreateVolume "0s" under a "*" delay
		steps        []step
		// wantVolumes are the names of the volumes in the driver once
		// every call has returned; each exists once.
		wantVolumes []string
	}{
		{
			name:         "caller gives up, the volume is made anyway",
			delay:        delay,
			ignoreCancel: true,
			steps:        []step{{name: "a", timeout: giveUp, wantCode: codes.DeadlineExceeded}},
			wantVolumes:  []string{"a"},
		},
		{
			name:        "without ignoreCancel the call is abandoned",
			delay:       delay,
			steps:       []step{{name: "a", timeout: giveUp, wantCode: codes.DeadlineExceeded}},
			wantVolumes: nil,
		},
		{
			name:         "same name while running is Aborted, later it gets the one volume",
			delay:        delay,
			ignoreCancel: true,
			steps: []step{
				{name: "a", timeout: giveUp, wantCode: codes.DeadlineExceeded, waitRunning: true},
				{name: "a", wantCode: codes.Aborted},
				{name: "b", timeout: giveUp, wantCode: codes.DeadlineExceeded, waitRunning: true},
			},
			wantVolumes: []string{"a", "b"},
		},
		{
			name:         "a caller that waits gets the volume",
			delay:        delay,
			ignoreCancel: true,
			steps:        []step{{name: "a", wantCode: codes.OK}},
			wantVolumes:  []string{"a"},
		},
		{
			name:         "0s exempts from an ignoring-cancel wildcard",
			delay:        10 * time.Second,
			ignoreCancel: true,
			exempt:       true,
			steps:        []step{{name: "a", timeout: 5 * time.Second, wantCode: codes.OK}},
			wantVolumes:  []string{"a"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			td := startDriver(t, Config{})
			set := td.SetDelay
			if tc.ignoreCancel {
				set = td.SetDelayIgnoringCancel
			}
			method := "CreateVolume"
			if tc.exempt {
				method = AllMethods
				if err := td.SetDelay("CreateVolume", 0); err != nil {
					t.Fatal(err)
				}
			}
			if err := set(method, tc.delay); err != nil {
				t.Fatal(err)
			}
			for i, s := range tc.steps {
				ctx := context.Background()
				cancel := context.CancelFunc(func() {})
				if s.timeout > 0 {
					ctx, cancel = context.WithTimeout(ctx, s.timeout)
				}
				_, err := td.ctrl.CreateVolume(ctx, &csi.CreateVolumeRequest{Name: s.name, VolumeCapabilities: mountCap()})
				cancel()
				if got := status.Code(err); got != s.wantCode {
					t.Fatalf("step %d (%s): %v, want code %v", i, s.name, err, s.wantCode)
				}
				if s.wantCode == codes.Aborted && !strings.Contains(err.Error(), "operation pending for this name") {
					t.Errorf("step %d (%s): %v does not say the operation is pending", i, s.name, err)
				}
				if s.waitRunning {
					waitRunning(t, td, "CreateVolume "+s.name)
				}
			}
			// Every call has ended once the driver logged it.
			waitLogged(t, td, "CreateVolume", len(tc.steps))
			td.knobs.unattended.Wait()
			if st := td.Knobs(); len(st.Running) != 0 {
				t.Errorf("calls still listed as running: %v", st.Running)
			}
			var got []string
			for _, v := range td.Volumes() {
				got = append(got, v.Name)
			}
			slices.Sort(got)
			if !slices.Equal(got, tc.wantVolumes) {
				t.Errorf("volumes %v, want %v", got, tc.wantVolumes)
			}
			if tc.ignoreCancel && len(tc.wantVolumes) > 0 {
				// A retry after the first call finished finds its volume.
				_ = td.SetDelay(method, 0)
				v := createVolume(t, td, &csi.CreateVolumeRequest{Name: tc.wantVolumes[0]})
				if n := len(td.Volumes()); n != len(tc.wantVolumes) {
					t.Errorf("retry of %s made another volume (%s): %d volumes", tc.wantVolumes[0], v.GetVolumeId(), n)
				}
			}
		})
	}
}

// TestRunningListsCallsIgnoringCancel checks what /knobs reports while such
// a call sleeps, and that Reset leaves the call running.
func TestRunningListsCallsIgnoringCancel(t *testing.T) {
	td := startDriver(t, Config{})
	if err := td.SetDelayIgnoringCancel("CreateVolume", 500*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, _ = td.ctrl.CreateVolume(ctx, &csi.CreateVolumeRequest{Name: "slow", VolumeCapabilities: mountCap()})
	waitRunning(t, td, "CreateVolume slow")
	td.Reset()
	st := td.Knobs()
	if len(st.Delays) != 0 || len(st.IgnoreCancel) != 0 {
		t.Errorf("Reset left rules %+v", st)
	}
	if !slices.Equal(st.Running, []string{"CreateVolume slow"}) {
		t.Errorf("running %v after Reset, want the sleeping call", st.Running)
	}
	td.knobs.unattended.Wait()
	if vols := td.Volumes(); len(vols) != 1 || vols[0].Name != "slow" {
		t.Errorf("volumes %+v, want the one named slow", vols)
	}
}

// waitRunning waits until the driver lists key as running: the call has
// arrived and sleeps.
func waitRunning(t *testing.T, td *testDriver, key string) {
	t.Helper()
	waitUntil(t, "call "+key+" to be running", func() bool {
		return slices.Contains(td.Knobs().Running, key)
	})
}

// waitLogged waits until the call log holds n calls of method: each has
// returned from the driver's handler.
func waitLogged(t *testing.T, td *testDriver, method string, n int) {
	t.Helper()
	waitUntil(t, fmt.Sprintf("%d %s calls in the call log", n, method), func() bool {
		recs, err := ReadCallLog(td.logPath)
		return err == nil && len(FilterCalls(recs, method)) >= n
	})
}

// waitUntil polls cond: the driver answers gRPC callers before it has
// necessarily noticed that they gave up.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
