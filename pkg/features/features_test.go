package features

import (
	"flag"
	"testing"
)

func TestGateFlag(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		want    bool
		wantErr bool
	}{
		{name: "off by default", want: false},
		{name: "turned on", args: []string{"--feature-gates=CrossNamespaceVolumeDataSource=true"}, want: true},
		{name: "unknown gate refused", args: []string{"--feature-gates=NoSuchGate=true"}, wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			g := &GateFlag{gate: newGateWithDefaults(t)}
			fs := flag.NewFlagSet("test", flag.ContinueOnError)
			fs.Var(g, "feature-gates", "")
			err := fs.Parse(tc.args)
			if (err != nil) != tc.wantErr {
				t.Fatalf("parse error = %v, want error %v", err, tc.wantErr)
			}
			if err == nil && g.gate.Enabled(CrossNamespaceVolumeDataSource) != tc.want {
				t.Errorf("CrossNamespaceVolumeDataSource = %v, want %v", !tc.want, tc.want)
			}
		})
	}
	var zero GateFlag
	if zero.String() != "" {
		t.Errorf("zero GateFlag String() = %q, want empty (flag help calls it)", zero.String())
	}
}

func newGateWithDefaults(t *testing.T) gate {
	g := newGate()
	if err := g.Add(defaultFeatureGates); err != nil {
		t.Fatal(err)
	}
	return g
}
