package features

import (
	"flag"
	"strings"
	"testing"

	"k8s.io/component-base/featuregate"
)

func TestGateFlag(t *testing.T) {
	type gates map[featuregate.Feature]bool
	defaults := gates{CrossNamespaceVolumeDataSource: false, Topology: true, VolumeAttributesClass: true, ReleaseLeaderElectionOnExit: false, CrossNamespaceVolumeSharing: false}
	with := func(changes gates) gates {
		out := gates{}
		for k, v := range defaults {
			out[k] = v
		}
		for k, v := range changes {
			out[k] = v
		}
		return out
	}
	tests := []struct {
		name string
		args []string
		want gates
		// wantErr is a substring of the parse error; "" means success.
		wantErr []string
	}{
		{name: "upstream v6.3.0 defaults", want: defaults},
		{name: "cross-namespace turned on", args: []string{"--feature-gates=CrossNamespaceVolumeDataSource=true"},
			want: with(gates{CrossNamespaceVolumeDataSource: true})},
		{name: "the blog's manifest: one flag per gate, both kept",
			args: []string{"--feature-gates=Topology=true", "--feature-gates=CrossNamespaceVolumeDataSource=true"},
			want: with(gates{CrossNamespaceVolumeDataSource: true})},
		{name: "a second flag does not reset the first",
			args: []string{"--feature-gates=CrossNamespaceVolumeDataSource=true", "--feature-gates=Topology=false"},
			want: with(gates{CrossNamespaceVolumeDataSource: true, Topology: false})},
		{name: "a later flag wins for the same gate",
			args: []string{"--feature-gates=CrossNamespaceVolumeDataSource=true,ReleaseLeaderElectionOnExit=true", "--feature-gates=CrossNamespaceVolumeDataSource=false"},
			want: with(gates{ReleaseLeaderElectionOnExit: true})},
		{name: "sharing turned on, independently of data sources", args: []string{"--feature-gates=CrossNamespaceVolumeSharing=true"},
			want: with(gates{CrossNamespaceVolumeSharing: true})},
		{name: "GA gates can be turned off", args: []string{"--feature-gates=Topology=false,VolumeAttributesClass=false"},
			want: with(gates{Topology: false, VolumeAttributesClass: false})},
		{name: "unknown gate refused, naming the known ones", args: []string{"--feature-gates=Topology=true", "--feature-gates=NoSuchGate=true"},
			wantErr: []string{"unrecognized feature gate: NoSuchGate", "CrossNamespaceVolumeDataSource", "Topology", "VolumeAttributesClass", "ReleaseLeaderElectionOnExit"}},
		{name: "value not a bool", args: []string{"--feature-gates=Topology=yes please"},
			wantErr: []string{"Topology"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			g := &GateFlag{gate: newGateWithDefaults(t)}
			fs := flag.NewFlagSet("test", flag.ContinueOnError)
			fs.SetOutput(&strings.Builder{})
			fs.Var(g, "feature-gates", "")
			err := fs.Parse(tc.args)
			if len(tc.wantErr) > 0 {
				if err == nil {
					t.Fatalf("parse succeeded, want an error mentioning %q", tc.wantErr)
				}
				for _, w := range tc.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q does not mention %q", err, w)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("parse error: %v", err)
			}
			for f, want := range tc.want {
				if got := g.gate.Enabled(f); got != want {
					t.Errorf("%s = %v, want %v", f, got, want)
				}
			}
		})
	}
	var zero GateFlag
	if zero.String() != "" {
		t.Errorf("zero GateFlag String() = %q, want empty (flag help calls it)", zero.String())
	}
}

// TestUpstreamGates pins the gates to upstream v6.3.0's stages: a gate
// locked or missing makes a manifest written for upstream fail at start.
func TestUpstreamGates(t *testing.T) {
	want := map[featuregate.Feature]featuregate.FeatureSpec{
		CrossNamespaceVolumeDataSource: {Default: false, PreRelease: featuregate.Alpha},
		Topology:                       {Default: true, PreRelease: featuregate.GA},
		VolumeAttributesClass:          {Default: true, PreRelease: featuregate.GA},
		ReleaseLeaderElectionOnExit:    {Default: false, PreRelease: featuregate.Alpha},
	}
	all := Gate.GetAll()
	for f, w := range want {
		got, ok := all[f]
		if !ok {
			t.Errorf("gate %s missing", f)
			continue
		}
		if got.Default != w.Default || got.PreRelease != w.PreRelease || got.LockToDefault {
			t.Errorf("gate %s = default %v, %s, locked %v; want default %v, %s, not locked", f, got.Default, got.PreRelease, got.LockToDefault, w.Default, w.PreRelease)
		}
	}
}

func newGateWithDefaults(t *testing.T) gate {
	g := newGate()
	if err := g.Add(defaultFeatureGates); err != nil {
		t.Fatal(err)
	}
	return g
}
