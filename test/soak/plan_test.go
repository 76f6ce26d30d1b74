package soak

import (
	"reflect"
	"testing"
)

func TestPlanIsDrawnFromTheSeedAlone(t *testing.T) {
	cfg := ShortConfig()
	cfg.Seed = 42
	a, b := NewPlan(cfg), NewPlan(cfg)
	if !reflect.DeepEqual(a, b) {
		t.Fatal("two plans of one seed differ")
	}
	cfg.Seed = 43
	if reflect.DeepEqual(a, NewPlan(cfg)) {
		t.Fatal("plans of two seeds are the same")
	}
}

func TestPlanMakesTheClaimsAndFaultsAsked(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
	}{
		{"short", ShortConfig()},
		{"long", LongConfig()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for seed := uint64(1); seed <= 20; seed++ {
				cfg := tc.cfg
				cfg.Seed = seed
				p := NewPlan(cfg)
				if got := p.Claims(); got != cfg.Claims {
					t.Fatalf("seed %d: %d claims, want %d", seed, got, cfg.Claims)
				}
				if len(p.Faults) != cfg.Faults || len(p.Batches) != cfg.Faults+1 {
					t.Fatalf("seed %d: %d faults and %d batches, want %d and %d", seed, len(p.Faults), len(p.Batches), cfg.Faults, cfg.Faults+1)
				}
				count := map[string]int{}
				for _, f := range p.Faults {
					count[f.Kind]++
				}
				for _, k := range cfg.Kinds {
					if count[k] < cfg.MinPerKind {
						t.Errorf("seed %d: fault %s %d times, want at least %d", seed, k, count[k], cfg.MinPerKind)
					}
				}
				for i, b := range p.Batches {
					if len(b) == 0 {
						t.Errorf("seed %d: batch %d is empty: fault %d hits no claim in flight", seed, i, i)
					}
				}
			}
		})
	}
}

func TestPlanMixesEveryKindOfClaim(t *testing.T) {
	cfg := LongConfig()
	cfg.Seed = 7
	p := NewPlan(cfg)
	seen := map[string]int{}
	note := func(c ClaimSpec) {
		switch {
		case c.Source == nil:
			seen["plain"]++
		case c.Cross():
			seen["cross "+c.Source.Kind]++
			seen["grant "+string(c.Grant)]++
		default:
			seen["same "+c.Source.Kind]++
		}
		if c.DeleteAfter > 0 {
			seen["deleted mid-flight"]++
		}
		if c.DeleteBound {
			seen["deleted bound"]++
		}
	}
	for _, b := range p.Batches {
		for _, op := range b {
			seen[op.Kind]++
			switch op.Kind {
			case OpClaim:
				note(*op.Claim)
			case OpEphemeral:
				for _, c := range op.Ephemeral.Dependents {
					note(c)
				}
			}
		}
	}
	for _, k := range []string{"plain", "same VolumeSnapshot", "same PersistentVolumeClaim", "cross VolumeSnapshot", "cross PersistentVolumeClaim",
		"grant granted", "grant late", "grant revoke", "grant none", "deleted mid-flight", "deleted bound", OpEphemeral, OpGrantToggle} {
		if seen[k] == 0 {
			t.Errorf("no %s in 1,000 claims: %v", k, seen)
		}
	}
}

func TestExpectBound(t *testing.T) {
	snap := &SourceRef{Namespace: "a", Kind: KindSnapshot, Name: "snap"}
	live, gone := &sourceRec{}, &sourceRec{deleted: true}
	for _, tc := range []struct {
		name    string
		spec    ClaimSpec
		src     *sourceRec
		granted bool
		want    bool
	}{
		{"empty volume", ClaimSpec{Namespace: "a"}, nil, false, true},
		{"same namespace, source there", ClaimSpec{Namespace: "a", Source: snap}, live, false, true},
		{"same namespace, source deleted", ClaimSpec{Namespace: "a", Source: snap}, gone, false, false},
		{"source never made", ClaimSpec{Namespace: "a", Source: snap}, nil, false, false},
		{"other namespace, granted", ClaimSpec{Namespace: "b", Source: snap}, live, true, true},
		{"other namespace, no grant", ClaimSpec{Namespace: "b", Source: snap}, live, false, false},
		{"other namespace, granted, source deleted", ClaimSpec{Namespace: "b", Source: snap}, gone, true, false},
	} {
		if got := expectBound(tc.spec, tc.src, tc.granted); got != tc.want {
			t.Errorf("%s: expectBound = %v, want %v", tc.name, got, tc.want)
		}
	}
}
