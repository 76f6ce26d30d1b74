package csidriver

import (
	"context"
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
